#!/usr/bin/env python3
"""Writes the seed corpus: well-formed inputs the fuzzer mutates from.
Tokens are HS256 with the secret in fuzz_targets/common.rs, valid at the
fuzz clock (Unix 1900000000), so mutations start from the deep paths."""
import base64, hashlib, hmac, json, os, shutil

SECRET = b"fuzzing-secret-0123456789abcdef0123456789"
here = os.path.dirname(os.path.abspath(__file__))

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def jwt(claims, alg="HS256", kid=None, secret=SECRET):
    header = {"alg": alg, "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    digest = hashlib.sha512 if alg == "HS512" else hashlib.sha256
    return signing + "." + b64(hmac.new(secret, signing.encode(), digest).digest())

base = {"username": "netadmin", "roles": ["FabricAdmin", "NetworkOperator"], "aud": "kubernetes",
        "iat": 1899999000, "exp": 2000000000, "tenant": {"name": "t1"}}
tokens = [
    jwt(base),
    jwt({**base, "role": "SystemAdmin", "roles": None, "username": None, "sub": "op1"}),
    jwt({**base, "iss": "https://efa.example.com", "aud": ["kubernetes", "other"]}, alg="HS512"),
    jwt({**base, "exp": "2000000000", "nbf": 1.5e9}),
    jwt({**base, "username": "system:admin"}),
    jwt(base, kid="k1", secret=b"wrong-secret-wrong-secret-wrong-secret!!"),
    b64(b'{"alg":"none"}') + "." + b64(json.dumps(base).encode()) + ".",
    "sha256~AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg",
]

def write(target, name, data):
    d = os.path.join(here, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)

for target in ("tokenreview_body", "jwt_routing", "config_loader"):
    shutil.rmtree(os.path.join(here, "seeds", target), ignore_errors=True)
for i, t in enumerate(tokens):
    write("jwt_routing", f"token-{i}", t)
    for v in ("v1", "v1beta1"):
        body = {"apiVersion": f"authentication.k8s.io/{v}", "kind": "TokenReview",
                "metadata": {"creationTimestamp": None},
                "spec": {"token": t, "audiences": ["kubernetes", "https://kubernetes.default.svc"]},
                "status": {"user": {}}}
        write("tokenreview_body", f"review-{v}-{i}", json.dumps(body))
write("tokenreview_body", "bad-kind", '{"apiVersion":"authentication.k8s.io/v1","kind":"Pod","spec":{"token":"x"}}')

common = open(os.path.join(here, "fuzz_targets", "common.rs")).read()
config = common.split('pub const CONFIG: &str = r#"', 1)[1].split('"#;', 1)[0]
write("config_loader", "efa", config)
write("config_loader", "oidc", """server:
  listen: 0.0.0.0:8443
  tls: {cert_file: tls.crt, key_file: tls.key}
  max_body_bytes: 1048576
  request_timeout: 20s
telemetry: {listen: 0.0.0.0:9090, log_format: json}
cache: {max_entries: 100000, max_ttl: 5m, negative_ttl: 10s}
issuers:
  - name: pcd-dex
    kind: oidc
    url: https://pcd.example.com/dex
    certificate_authority_file: ca.crt
    audiences: [kubernetes]
    algorithms: [RS256, ES256]
    clock_skew: 1m
    claims:
      username: {claims: [email, name], prefix: ""}
      groups: {claim: groups, prefix: ""}
      uid: {claim: sub}
      extra: {"authn.k8s.io/connector-id": federated_claims.connector_id}
""")

# cel: the expression on the first line, the claims after it.
shutil.rmtree(os.path.join(here, "seeds", "cel"), ignore_errors=True)
claims = json.dumps({"sub": "s", "email": "jane@example.com", "email_verified": True,
                     "groups": ["a", "b"], "roles": "user,admin", "exp": 2000000000, "nbf": 1900000000,
                     "nested": {"x": "y"}})
for i, e in enumerate([
    'claims.username + ":external-user"',
    'claims.roles.split(",")',
    "dyn(claims.groups).map(g, 'oidc:' + g)",
    "claims.?email_verified.orValue(true) == true",
    "claims.exp - claims.nbf <= 86400",
    "has(claims.hd) && claims.hd == 'example.com'",
    "user.groups.all(g, !g.startsWith('system:'))",
    "dyn(claims.groups).map(a, dyn(claims.groups).map(b, a + b)).size() > 0",
    "claims.nested.x.upperAscii()",
    "claims.groups.map(g, g)",
]):
    write("cel", f"expr-{i}", e + "\n" + claims)
