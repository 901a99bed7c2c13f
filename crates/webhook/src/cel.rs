//! CEL as the kube-apiserver's structured authentication evaluates it: the
//! variables `claims` (the verified payload, `map(string, any)`) and `user`
//! (the mapped user, for `userValidationRules`), expressions compiled when
//! the config loads, evaluation bounded and never a panic.
//!
//! cel-rust parses and evaluates; it has no type checker, so `check` below
//! does the part of cel-go's checker the apiserver's rules depend on: the
//! declared variables and fields, the range of a comprehension (a field of
//! `claims` is `any`, which cel-go refuses to iterate: `dyn(...)` makes it
//! iterable) and the result type (a validation rule must be a `bool`).
//! It infers types for what the upstream examples use and takes anything
//! else as `dyn`, so it can accept an expression cel-go would refuse, never
//! the other way round for the rules above.
//!
//! The bound: `@cost` calls charge 1 plus the size of a value against a
//! budget of `COST_LIMIT` per evaluation: inside a loop every node that
//! makes a value is charged, outside one what can grow a value, and every
//! comprehension's range. Each operation's work is linear in the sizes of
//! its operands and result, each of which was charged when made (or is a
//! claim, bounded by the token's size), so total work is bounded by a
//! multiple of the budget: a loop, or a value built up, that exceeds it ends
//! the evaluation with an error, which refuses the token. Only the
//! claims an issuer's expressions can read are converted for them.

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock};

pub(crate) use cel::Value;
use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr as Node, operators};
use cel::common::types::{
    self, CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, IdedExpr};
use serde_json::Value as Json;

/// Per evaluation; cel-go's per-call limit in the kube-apiserver is 1e6 too.
pub(crate) const COST_LIMIT: u64 = 1_000_000;
/// An expression longer than this is refused at load (the apiserver's own
/// limit on a CEL expression in a config is of this order).
pub(crate) const MAX_EXPRESSION_BYTES: usize = 10 * 1024;

const COST_FN: &str = "@cost";

/// Which variable an expression sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    Claims,
    User,
}

/// What the expression must evaluate to, checked at load where the type is
/// known statically (as the apiserver does: only `bool` is enforced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Bool,
    Any,
}

/// A compiled expression, ready to evaluate.
#[derive(Clone)]
pub(crate) struct Expression {
    pub(crate) source: Arc<str>,
    var: Var,
    node: Arc<IdedExpr>,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

/// The one environment: the standard library, optional values, the strings
/// and lists extensions, and `@cost`. `None` only if cel-rust refused our
/// declarations, which every compile then reports.
static ENV: LazyLock<Option<Arc<Env>>> = LazyLock::new(|| {
    catch_unwind(|| {
        let mut env = Env::stdlib();
        env.add_extension(cel::extensions::strings).ok()?;
        env.add_extension(cel::extensions::lists).ok()?;
        env.add_overload(COST_FN, "cost_dyn", vec![types::DYN_TYPE], charge)
            .ok()?;
        Some(Arc::new(env))
    })
    .ok()
    .flatten()
});

thread_local! {
    /// What is left of the current evaluation's budget on this thread.
    static BUDGET: Cell<u64> = const { Cell::new(0) };
}

fn charge<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let Some(v) = args.into_iter().next() else {
        return Err(ExecutionError::function_error(COST_FN, "no argument"));
    };
    let size = v
        .as_sizer()
        .map_or(0, |s| u64::try_from(*s.size().inner()).unwrap_or(0));
    let cost = 1 + size;
    let left = BUDGET.with(Cell::get);
    if cost > left {
        BUDGET.with(|b| b.set(0));
        return Err(ExecutionError::function_error(
            "cost",
            format!("evaluation exceeded its cost limit of {COST_LIMIT}"),
        ));
    }
    BUDGET.with(|b| b.set(left - cost));
    Ok(v)
}

/// Compiles and checks `source`; the error is for people (with the
/// position, as the apiserver writes it).
pub(crate) fn compile(source: &str, var: Var, want: Want) -> Result<Expression, String> {
    if source.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if source.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "is {} bytes long; at most {MAX_EXPRESSION_BYTES} are allowed",
            source.len()
        ));
    }
    let Some(env) = ENV.as_ref() else {
        return Err("the CEL environment could not be built".to_owned());
    };
    let program = catch_unwind(AssertUnwindSafe(|| env.compile(source)))
        .map_err(|_| "compilation failed: the CEL parser gave up on it".to_owned())?
        .map_err(|e| format!("compilation failed: {e}"))?;
    let root = program.expression();
    let mut checker = Checker {
        source,
        info: program.source_info(),
        scopes: Vec::new(),
        var,
    };
    let ty = checker.check(root)?;
    if want == Want::Bool && ty != Type::Bool {
        return Err("must evaluate to bool".to_owned());
    }
    let mut ids = u64::MAX;
    Ok(Expression {
        source: Arc::from(source),
        var,
        node: Arc::new(instrument(root, &mut ids)),
    })
}

impl Expression {
    /// Evaluates with `bound` as the expression's variable: the value, or
    /// why there is none (an error, the budget, a panic in cel-rust).
    pub(crate) fn eval(&self, bound: &Bindings<'_>) -> Result<Value, String> {
        let Some(env) = ENV.as_ref() else {
            return Err("the CEL environment could not be built".to_owned());
        };
        let wanted = match self.var {
            Var::Claims => "claims",
            Var::User => "user",
        };
        if bound.name != wanted {
            return Err(format!("{wanted} is not bound here"));
        }
        let run = || {
            let mut ctx = Context::with_env(env.clone());
            ctx.set_variable_resolver(bound);
            BUDGET.with(|b| b.set(COST_LIMIT));
            let out = ctx.resolve(&self.node);
            BUDGET.with(|b| b.set(0));
            out
        };
        match catch_unwind(AssertUnwindSafe(run)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(describe(&e, &self.source)),
            Err(_) => {
                BUDGET.with(|b| b.set(0));
                Err("the CEL evaluator failed on this input".to_owned())
            }
        }
    }

    /// The top-level claims the expression can read, or `None` when it may
    /// read any (it uses `claims` other than as `claims.<field>`).
    pub(crate) fn claim_fields(&self) -> Option<Vec<String>> {
        let mut out = Vec::new();
        fields(&self.node, &mut out).then_some(out)
    }

    /// Whether the expression reads `claims.<field>` (plain or optional).
    pub(crate) fn reads_claim(&self, field: &str) -> bool {
        reads_claim(&self.node, field)
    }
}

/// An evaluation error for the log, without the values cel-rust puts in
/// some messages: they come from the token's claims, which are never
/// logged. A missing key is named when the expression itself spells it.
#[allow(deprecated)]
fn describe(e: &ExecutionError, source: &str) -> String {
    use ExecutionError as E;
    match e {
        E::InvalidArgumentCount { .. }
        | E::UnexpectedType { .. }
        | E::NoSuchOverload(_)
        | E::UndeclaredReference(_)
        | E::MissingArgumentOrTarget => e.to_string(),
        E::NoSuchKey(k) if source.contains(k.as_str()) => format!("no such key: {k}"),
        E::NoSuchKey(_) => "no such key".to_owned(),
        E::FunctionError { function, message } if function == "cost" => message.clone(),
        E::FunctionError { function, .. } => format!("function {function} failed"),
        E::UnsupportedBinaryOperator(op, a, b) | E::Overflow(op, a, b) => format!(
            "operator '{op}' cannot take {} and {}",
            a.type_of(),
            b.type_of()
        ),
        E::ValuesNotComparable(a, b) => {
            format!("{} cannot be compared to {}", a.type_of(), b.type_of())
        }
        E::DivisionByZero(_) | E::RemainderByZero(_) => "division by zero".to_owned(),
        E::IndexOutOfBounds(_) => "index out of bounds".to_owned(),
        E::DuplicateKey(_) => "repeated map key".to_owned(),
        E::UnsupportedIndex(_, _)
        | E::UnsupportedMapIndex(_)
        | E::UnsupportedListIndex(_)
        | E::UnsupportedKeyType(_) => "a value cannot be used as this index".to_owned(),
        E::UnsupportedTargetType { target } | E::NotSupportedAsMethod { target, .. } => {
            format!("unsupported on type {}", target.type_of())
        }
        _ => "evaluation failed".to_owned(),
    }
}

/// Adds the fields of `claims.<field>` (and `claims.?<field>`) under `e`
/// to `out`; false when `claims` is used any other way.
fn fields(e: &IdedExpr, out: &mut Vec<String>) -> bool {
    let claims_ident = |e: &IdedExpr| match &e.expr {
        Node::Ident(n) => n == "claims",
        Node::Call(c) if c.func_name == COST_FN => {
            matches!(c.args.first().map(|a| &a.expr), Some(Node::Ident(n)) if n == "claims")
        }
        _ => false,
    };
    match &e.expr {
        Node::Ident(n) => n != "claims",
        Node::Select(s) if claims_ident(&s.operand) => {
            out.push(s.field.clone());
            true
        }
        Node::Select(s) => fields(&s.operand, out),
        Node::Call(c) => {
            if c.func_name == operators::OPT_SELECT
                && c.args.len() == 2
                && claims_ident(&c.args[0])
                && let Node::Literal(cel::common::ast::LiteralValue::String(f)) = &c.args[1].expr
            {
                out.push(f.inner().to_string());
                return true;
            }
            c.target.as_deref().is_none_or(|t| fields(t, out))
                && c.args.iter().all(|a| fields(a, out))
        }
        Node::List(l) => l.elements.iter().all(|a| fields(a, out)),
        Node::Map(m) => m.entries.iter().all(|en| match &en.expr {
            EntryExpr::MapEntry(me) => fields(&me.key, out) && fields(&me.value, out),
            EntryExpr::StructField(sf) => fields(&sf.value, out),
        }),
        Node::Comprehension(c) => {
            // A loop variable named claims would shadow it: take all.
            c.iter_var != "claims"
                && c.accu_var != "claims"
                && [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ]
                .iter()
                .all(|x| fields(x, out))
        }
        Node::Literal(_) => true,
        Node::Struct(_) | Node::Unspecified => false,
    }
}

fn reads_claim(e: &IdedExpr, field: &str) -> bool {
    let is_claims = |e: &IdedExpr| match &e.expr {
        Node::Ident(n) => n == "claims",
        Node::Call(c) if c.func_name == COST_FN => {
            matches!(c.args.first().map(|a| &a.expr), Some(Node::Ident(n)) if n == "claims")
        }
        _ => false,
    };
    match &e.expr {
        Node::Select(s) => {
            (s.field == field && is_claims(&s.operand)) || reads_claim(&s.operand, field)
        }
        Node::Call(c) => {
            if c.func_name == operators::OPT_SELECT
                && c.args.len() == 2
                && is_claims(&c.args[0])
                && matches!(&c.args[1].expr, Node::Literal(cel::common::ast::LiteralValue::String(s)) if s.inner() == field)
            {
                return true;
            }
            c.target.as_deref().is_some_and(|t| reads_claim(t, field))
                || c.args.iter().any(|a| reads_claim(a, field))
        }
        Node::List(l) => l.elements.iter().any(|a| reads_claim(a, field)),
        Node::Map(m) => m.entries.iter().any(|en| match &en.expr {
            EntryExpr::MapEntry(me) => reads_claim(&me.key, field) || reads_claim(&me.value, field),
            EntryExpr::StructField(sf) => reads_claim(&sf.value, field),
        }),
        Node::Comprehension(c) => {
            reads_claim(&c.iter_range, field)
                || reads_claim(&c.loop_step, field)
                || reads_claim(&c.accu_init, field)
                || reads_claim(&c.loop_cond, field)
                || reads_claim(&c.result, field)
        }
        _ => false,
    }
}

/// For the `cel` fuzz target: compiles `expression` over `claims` (and over
/// `user`) and evaluates it on `claims_json` when that is a JSON object.
/// Whatever the input, it returns; an error is an answer, not a failure.
#[doc(hidden)]
pub fn fuzz_compile_and_eval(expression: &str, claims_json: &[u8]) {
    let claims = serde_json::from_slice::<Json>(claims_json)
        .ok()
        .filter(Json::is_object);
    for (var, want) in [
        (Var::Claims, Want::Any),
        (Var::Claims, Want::Bool),
        (Var::User, Want::Bool),
    ] {
        let Ok(e) = compile(expression, var, want) else {
            continue;
        };
        let _ = e.reads_claim("email");
        if let Some(Json::Object(c)) = &claims {
            let _ = e.eval(&Bindings::claims(c));
        }
    }
}

// ---- values ----------------------------------------------------------------

/// A variable for one token's evaluations, built once and borrowed by each
/// (cel-rust would otherwise copy the whole value into every context).
/// Strings borrow from the claims or the user.
pub(crate) struct Bindings<'a> {
    name: &'static str,
    value: Box<dyn Val + 'a>,
}

impl VariableResolver for Bindings<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        (variable == self.name).then(|| CowVal::Borrowed(&*self.value))
    }
}

impl<'a> Bindings<'a> {
    /// `claims`: the payload as the apiserver converts it (unstructured
    /// JSON: integers are `int`, other numbers `double`).
    pub(crate) fn claims(claims: &'a serde_json::Map<String, Json>) -> Bindings<'a> {
        Bindings {
            name: "claims",
            value: object(claims),
        }
    }

    /// `claims` with only `fields` (those the expressions can read: the
    /// others could never be seen, so converting them is waste).
    pub(crate) fn claims_only(
        claims: &'a serde_json::Map<String, Json>,
        fields: &[String],
    ) -> Bindings<'a> {
        let map: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = claims
            .iter()
            .filter(|(k, _)| fields.iter().any(|f| f == *k))
            .map(|(k, v)| (CelMapKey::from(k.as_str()), val(v)))
            .collect();
        Bindings {
            name: "claims",
            value: Box::new(CelMap::from(map)),
        }
    }

    /// `user`: username, uid ("" when none), groups, extra.
    pub(crate) fn user(user: &'a crate::wire::UserInfo) -> Bindings<'a> {
        let strings = |v: &'a [String]| -> Box<dyn Val + 'a> {
            Box::new(CelList::from(
                v.iter()
                    .map(|s| Box::new(CelString::from(s.as_str())) as Box<dyn Val + 'a>)
                    .collect::<Vec<_>>(),
            ))
        };
        let mut m: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = HashMap::new();
        m.insert(
            CelMapKey::from("username"),
            Box::new(CelString::from(user.username.as_str())),
        );
        m.insert(
            CelMapKey::from("uid"),
            Box::new(CelString::from(user.uid.as_deref().unwrap_or(""))),
        );
        m.insert(CelMapKey::from("groups"), strings(&user.groups));
        let extra: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = user
            .extra
            .iter()
            .map(|(k, v)| (CelMapKey::from(k.as_str()), strings(v)))
            .collect();
        m.insert(CelMapKey::from("extra"), Box::new(CelMap::from(extra)));
        Bindings {
            name: "user",
            value: Box::new(CelMap::from(m)),
        }
    }
}

fn object<'a>(m: &'a serde_json::Map<String, Json>) -> Box<dyn Val + 'a> {
    let map: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = m
        .iter()
        .map(|(k, v)| (CelMapKey::from(k.as_str()), val(v)))
        .collect();
    Box::new(CelMap::from(map))
}

fn val(v: &Json) -> Box<dyn Val + '_> {
    match v {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Box::new(CelInt::from(i)),
            None => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(items) => Box::new(CelList::from(items.iter().map(val).collect::<Vec<_>>())),
        Json::Object(m) => object(m),
    }
}

// ---- the bound -------------------------------------------------------------

fn next_id(ids: &mut u64) -> u64 {
    *ids -= 1;
    *ids
}

fn wrap(e: IdedExpr, ids: &mut u64) -> IdedExpr {
    IdedExpr {
        id: next_id(ids),
        expr: Node::Call(CallExpr {
            func_name: COST_FN.to_owned(),
            target: None,
            args: vec![e],
        }),
    }
}

/// Functions whose result is no bigger than their operands and whose work
/// is linear in them: outside a loop they run once each, on values already
/// bounded (the claims, or charged results), so they need no charge there.
const NON_GROWING: &[&str] = &[
    operators::EQUALS,
    operators::NOT_EQUALS,
    operators::LESS,
    operators::LESS_EQUALS,
    operators::GREATER,
    operators::GREATER_EQUALS,
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::LOGICAL_NOT,
    operators::CONDITIONAL,
    operators::OPT_SELECT,
    operators::INDEX,
    operators::OPT_INDEX,
    operators::IN,
    operators::NOT_STRICTLY_FALSE,
    operators::SUBSTRACT,
    operators::DIVIDE,
    operators::MODULO,
    operators::NEGATE,
    "orValue",
    "hasValue",
    "value",
    "startsWith",
    "endsWith",
    "contains",
    "matches",
    "size",
    "int",
    "uint",
    "double",
    "bool",
    "dyn",
    "type",
    "lowerAscii",
    "upperAscii",
    "trim",
    "substring",
    "charAt",
    "indexOf",
    "lastIndexOf",
    "split",
];

/// `e` with its work charged: inside a loop every node that makes a
/// value, outside one what can grow a value (`+`, `join`, `replace`, list
/// and map building calls, anything not known to be `NON_GROWING`), and
/// every comprehension's range (its size is the iterations).
fn instrument(e: &IdedExpr, ids: &mut u64) -> IdedExpr {
    instrument_in(e, ids, false)
}

fn instrument_in(e: &IdedExpr, ids: &mut u64, in_loop: bool) -> IdedExpr {
    let id = e.id;
    let mut charge = in_loop;
    let expr = match &e.expr {
        // A variable costs nothing to read: what it holds was charged when
        // it was made.
        Node::Literal(_) | Node::Unspecified | Node::Struct(_) | Node::Ident(_) => {
            return e.clone();
        }
        Node::Select(s) => {
            let mut s = s.clone();
            s.operand = Box::new(instrument_in(&s.operand, ids, in_loop));
            Node::Select(s)
        }
        Node::Call(c) => {
            charge |= !NON_GROWING.contains(&c.func_name.as_str());
            Node::Call(CallExpr {
                func_name: c.func_name.clone(),
                target: c
                    .target
                    .as_deref()
                    .map(|t| Box::new(instrument_in(t, ids, in_loop))),
                args: c
                    .args
                    .iter()
                    .map(|a| instrument_in(a, ids, in_loop))
                    .collect(),
            })
        }
        Node::List(l) => {
            let mut l = l.clone();
            l.elements = l
                .elements
                .iter()
                .map(|a| instrument_in(a, ids, in_loop))
                .collect();
            Node::List(l)
        }
        Node::Map(m) => {
            let mut m = m.clone();
            for en in &mut m.entries {
                if let EntryExpr::MapEntry(me) = &mut en.expr {
                    me.key = instrument_in(&me.key, ids, in_loop);
                    me.value = instrument_in(&me.value, ids, in_loop);
                }
            }
            Node::Map(m)
        }
        Node::Comprehension(c) => {
            let mut c: ComprehensionExpr = (**c).clone();
            c.iter_range = match &c.iter_range.expr {
                Node::Ident(_) => wrap(c.iter_range.clone(), ids),
                _ => {
                    let r = instrument_in(&c.iter_range, ids, in_loop);
                    if in_loop { r } else { wrap(r, ids) }
                }
            };
            c.loop_step = instrument_step(&c.loop_step, &c.accu_var, ids);
            // The result of a comprehension is its accumulator, charged as
            // it was built; wrapping the whole would charge it twice.
            return IdedExpr {
                id,
                expr: Node::Comprehension(Box::new(c)),
            };
        }
    };
    let out = IdedExpr { id, expr };
    if charge { wrap(out, ids) } else { out }
}

/// A loop step keeps the shape cel-rust recognises (`@result + [x]`,
/// `@result && p`, `p ? @result + 1 : @result`); what it computes is charged.
fn instrument_step(e: &IdedExpr, accu: &str, ids: &mut u64) -> IdedExpr {
    match &e.expr {
        Node::Ident(n) if n == accu => e.clone(),
        Node::Call(c)
            if c.target.is_none()
                && [
                    operators::LOGICAL_AND,
                    operators::LOGICAL_OR,
                    operators::ADD,
                    operators::CONDITIONAL,
                ]
                .contains(&c.func_name.as_str())
                && c.args.iter().any(|a| mentions_accu(a, accu)) =>
        {
            IdedExpr {
                id: e.id,
                expr: Node::Call(CallExpr {
                    func_name: c.func_name.clone(),
                    target: None,
                    args: c
                        .args
                        .iter()
                        .map(|a| instrument_step(a, accu, ids))
                        .collect(),
                }),
            }
        }
        // Left a list literal, as cel-rust's in-place append wants it; the
        // appended elements are charged.
        Node::List(l) => {
            let mut l = l.clone();
            l.elements = l
                .elements
                .iter()
                .map(|a| instrument_in(a, ids, true))
                .collect();
            IdedExpr {
                id: e.id,
                expr: Node::List(l),
            }
        }
        _ => instrument_in(e, ids, true),
    }
}

fn mentions_accu(e: &IdedExpr, accu: &str) -> bool {
    match &e.expr {
        Node::Ident(n) => n == accu,
        Node::Call(c) => c.args.iter().any(|a| mentions_accu(a, accu)),
        _ => false,
    }
}

// ---- the checker -----------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Type {
    /// `google.protobuf.Any`: what a field of `claims` is. Usable as `dyn`
    /// except as a comprehension's range.
    Any,
    Dyn,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    List(Box<Type>),
    Map(Box<Type>, Box<Type>),
    Optional(Box<Type>),
    /// The `user` variable (`authentication.k8s.io` UserInfo).
    User,
    TypeT,
}

impl Type {
    fn name(&self) -> String {
        match self {
            Type::Any => "any".into(),
            Type::Dyn => "dyn".into(),
            Type::Bool => "bool".into(),
            Type::Int => "int".into(),
            Type::Uint => "uint".into(),
            Type::Double => "double".into(),
            Type::String => "string".into(),
            Type::Bytes => "bytes".into(),
            Type::Null => "null_type".into(),
            Type::List(t) => format!("list({})", t.name()),
            Type::Map(k, v) => format!("map({}, {})", k.name(), v.name()),
            Type::Optional(t) => format!("optional_type({})", t.name()),
            Type::User => "kubernetes.UserInfo".into(),
            Type::TypeT => "type".into(),
        }
    }

    fn loose(&self) -> bool {
        matches!(self, Type::Any | Type::Dyn)
    }
}

fn list(t: Type) -> Type {
    Type::List(Box::new(t))
}

struct Checker<'a> {
    source: &'a str,
    info: &'a cel::common::ast::SourceInfo,
    scopes: Vec<(String, Type)>,
    var: Var,
}

impl Checker<'_> {
    /// "ERROR: <input>:L:C: msg" and the caret under the node, as cel-go.
    fn error(&self, id: u64, msg: &str) -> String {
        let start = self.info.offset_for(id).map_or(0, |(s, _)| s as usize);
        let mut line = 1;
        let mut col = 0;
        let mut line_start = 0;
        for (i, ch) in self.source.char_indices() {
            if i >= start {
                break;
            }
            if ch == '\n' {
                line += 1;
                col = 0;
                line_start = i + 1;
            } else {
                col += 1;
            }
        }
        let text = self.source[line_start..].lines().next().unwrap_or("");
        format!(
            "compilation failed: ERROR: <input>:{line}:{}: {msg}\n | {text}\n | {}^",
            col + 1,
            ".".repeat(col)
        )
    }

    fn check(&mut self, e: &IdedExpr) -> Result<Type, String> {
        match &e.expr {
            Node::Literal(l) => Ok(match l {
                cel::common::ast::LiteralValue::Boolean(_) => Type::Bool,
                cel::common::ast::LiteralValue::Bytes(_) => Type::Bytes,
                cel::common::ast::LiteralValue::Double(_) => Type::Double,
                cel::common::ast::LiteralValue::Int(_) => Type::Int,
                cel::common::ast::LiteralValue::Null => Type::Null,
                cel::common::ast::LiteralValue::String(_) => Type::String,
                cel::common::ast::LiteralValue::UInt(_) => Type::Uint,
            }),
            Node::Ident(name) => {
                if let Some((_, t)) = self.scopes.iter().rev().find(|(n, _)| n == name) {
                    return Ok(t.clone());
                }
                match (name.as_str(), self.var) {
                    ("claims", Var::Claims) => {
                        Ok(Type::Map(Box::new(Type::String), Box::new(Type::Any)))
                    }
                    ("user", Var::User) => Ok(Type::User),
                    (
                        "int" | "uint" | "double" | "string" | "bool" | "bytes" | "list" | "map"
                        | "null_type" | "type" | "dyn",
                        _,
                    ) => Ok(Type::TypeT),
                    _ => Err(self.error(
                        e.id,
                        &format!("undeclared reference to '{name}' (in container '')"),
                    )),
                }
            }
            Node::Select(s) => {
                let operand = self.check(&s.operand)?;
                let t = self.field(e.id, &operand, &s.field)?;
                Ok(if s.test { Type::Bool } else { t })
            }
            Node::List(l) => {
                let mut elem: Option<Type> = None;
                for a in &l.elements {
                    let t = self.check(a)?;
                    elem = Some(match elem {
                        None => t,
                        Some(prev) if prev == t => prev,
                        Some(_) => Type::Dyn,
                    });
                }
                Ok(list(elem.unwrap_or(Type::Dyn)))
            }
            Node::Map(m) => {
                let mut kv: Option<(Type, Type)> = None;
                for en in &m.entries {
                    if let EntryExpr::MapEntry(me) = &en.expr {
                        let k = self.check(&me.key)?;
                        let v = self.check(&me.value)?;
                        kv = Some(match kv {
                            None => (k, v),
                            Some((pk, pv)) => (
                                if pk == k { pk } else { Type::Dyn },
                                if pv == v { pv } else { Type::Dyn },
                            ),
                        });
                    }
                }
                let (k, v) = kv.unwrap_or((Type::Dyn, Type::Dyn));
                Ok(Type::Map(Box::new(k), Box::new(v)))
            }
            Node::Comprehension(c) => {
                let range = self.check(&c.iter_range)?;
                let elem = match &range {
                    Type::List(t) => (**t).clone(),
                    Type::Map(k, _) => (**k).clone(),
                    Type::Dyn => Type::Dyn,
                    other => {
                        return Err(self.error(
                            c.iter_range.id,
                            &format!(
                                "expression of type '{}' cannot be range of a comprehension (must be list, map, or dynamic)",
                                other.name()
                            ),
                        ));
                    }
                };
                let accu = self.check(&c.accu_init)?;
                self.scopes.push((c.iter_var.clone(), elem));
                self.scopes.push((c.accu_var.clone(), accu.clone()));
                self.check(&c.loop_cond)?;
                let step = self.check(&c.loop_step)?;
                // The accumulator takes the step's type (`[] + [x]` is a
                // list of x's type).
                if let Some(slot) = self.scopes.last_mut() {
                    slot.1 = if accu == list(Type::Dyn) || accu == step {
                        step
                    } else {
                        Type::Dyn
                    };
                }
                let result = self.check(&c.result);
                self.scopes.pop();
                self.scopes.pop();
                result
            }
            Node::Call(call) => self.call(e.id, call),
            Node::Struct(_) | Node::Unspecified => {
                Err(self.error(e.id, "message construction is not supported"))
            }
        }
    }

    fn field(&self, id: u64, operand: &Type, field: &str) -> Result<Type, String> {
        match operand {
            Type::Map(_, v) => Ok(match **v {
                Type::Any => Type::Any,
                ref t => t.clone(),
            }),
            Type::Any | Type::Dyn => Ok(Type::Dyn),
            Type::User => match field {
                "username" | "uid" => Ok(Type::String),
                "groups" => Ok(list(Type::String)),
                "extra" => Ok(Type::Map(
                    Box::new(Type::String),
                    Box::new(list(Type::String)),
                )),
                _ => Err(self.error(id, &format!("undefined field '{field}'"))),
            },
            other => Err(self.error(
                id,
                &format!("type '{}' does not support field selection", other.name()),
            )),
        }
    }

    fn call(&mut self, id: u64, c: &CallExpr) -> Result<Type, String> {
        let f = c.func_name.as_str();
        if f == operators::OPT_SELECT && c.args.len() == 2 {
            let operand = self.check(&c.args[0])?;
            let Node::Literal(cel::common::ast::LiteralValue::String(name)) = &c.args[1].expr
            else {
                return Ok(Type::Optional(Box::new(Type::Dyn)));
            };
            let t = self.field(id, &operand, name.inner())?;
            return Ok(Type::Optional(Box::new(t)));
        }
        let target = match &c.target {
            Some(t) => Some(self.check(t)?),
            None => None,
        };
        let args: Vec<Type> = c
            .args
            .iter()
            .map(|a| self.check(a))
            .collect::<Result<_, _>>()?;
        let same = |a: &Type, b: &Type| if a == b { a.clone() } else { Type::Dyn };
        Ok(match (f, &target, args.as_slice()) {
            (operators::LOGICAL_AND | operators::LOGICAL_OR | operators::LOGICAL_NOT, _, _)
            | (operators::NOT_STRICTLY_FALSE, _, _)
            | (
                operators::EQUALS
                | operators::NOT_EQUALS
                | operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS
                | operators::IN,
                _,
                _,
            ) => Type::Bool,
            (operators::CONDITIONAL, None, [_, a, b]) => same(a, b),
            (operators::ADD, None, [a, b]) => match (a, b) {
                (Type::String, Type::String) => Type::String,
                (Type::List(x), Type::List(y)) => list(same(x, y)),
                (Type::Int, Type::Int) => Type::Int,
                (Type::Double, Type::Double) => Type::Double,
                _ => Type::Dyn,
            },
            (
                operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE | operators::MODULO,
                None,
                [a, b],
            ) => same(a, b),
            (operators::NEGATE, None, [a]) => a.clone(),
            (operators::INDEX | operators::OPT_INDEX, None, [a, _]) => {
                let t = match a {
                    Type::List(t) => (**t).clone(),
                    Type::Map(_, v) => (**v).clone(),
                    _ => Type::Dyn,
                };
                if f == operators::OPT_INDEX {
                    Type::Optional(Box::new(t))
                } else {
                    t
                }
            }
            ("size", _, _) => Type::Int,
            ("int", None, _) => Type::Int,
            ("uint", None, _) => Type::Uint,
            ("double", None, _) => Type::Double,
            ("string", None, _) => Type::String,
            ("bool", None, _) => Type::Bool,
            ("bytes", None, _) => Type::Bytes,
            ("dyn", None, _) => Type::Dyn,
            ("type", None, _) => Type::TypeT,
            (
                "startsWith" | "endsWith" | "contains" | "matches" | "hasValue" | "exists" | "all"
                | "exists_one",
                _,
                _,
            ) => Type::Bool,
            (
                "lowerAscii" | "upperAscii" | "trim" | "replace" | "substring" | "charAt"
                | "reverse" | "format" | "join" | "strings.quote",
                _,
                _,
            ) => Type::String,
            ("indexOf" | "lastIndexOf", _, _) => Type::Int,
            ("split", _, _) => list(Type::String),
            ("optional.of" | "optional.ofNonZeroValue", None, [a]) => {
                Type::Optional(Box::new(a.clone()))
            }
            ("optional.none", None, []) => Type::Optional(Box::new(Type::Dyn)),
            ("value", Some(Type::Optional(t)), []) => (**t).clone(),
            ("orValue", Some(Type::Optional(t)), [a]) => same(t, a),
            ("or", Some(Type::Optional(t)), [Type::Optional(a)]) => {
                Type::Optional(Box::new(same(t, a)))
            }
            ("distinct" | "sort" | "slice", Some(t @ Type::List(_)), _) => t.clone(),
            ("flatten", Some(Type::List(_)), _) => list(Type::Dyn),
            // A call on a value of unknown type: cel-go resolves it at run
            // time too.
            (_, Some(t), _) if t.loose() => Type::Dyn,
            (_, _, _) if self.known(f) => Type::Dyn,
            _ => {
                return Err(self.error(
                    id,
                    &format!("undeclared reference to '{f}' (in container '')"),
                ));
            }
        })
    }

    fn known(&self, f: &str) -> bool {
        ENV.as_ref().is_some_and(|env| {
            let probe = [CowVal::owned(types::CelNull)];
            env.find_overload(f, &probe).is_some() || f.starts_with('_') || f.starts_with('@')
        }) || matches!(
            f,
            "max"
                | "min"
                | "timestamp"
                | "duration"
                | "getField"
                | "lists.range"
                | "first"
                | "last"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(src: &str, c: Json) -> Result<Value, String> {
        compile(src, Var::Claims, Want::Any)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .eval(&Bindings::claims(c.as_object().unwrap()))
    }

    #[test]
    fn the_apiserver_type_rules() {
        let err = compile("claims.groups.map(g, 'x:' + g)", Var::Claims, Want::Any).unwrap_err();
        assert!(
            err.contains("expression of type 'any' cannot be range of a comprehension")
                && err.contains("<input>:1:7"),
            "{err}"
        );
        assert!(
            compile(
                "dyn(claims.groups).map(g, 'x:' + g)",
                Var::Claims,
                Want::Any
            )
            .is_ok()
        );
        assert!(compile("claims.a.b.map(x, x)", Var::Claims, Want::Any).is_ok());
        assert!(compile("claims['groups'].all(x, x != '')", Var::Claims, Want::Bool).is_err());
        for not_bool in [
            "claims.email_verified",
            "claims.?email_verified.orValue(true)",
            "has(claims.x) ? claims.x : false",
        ] {
            assert_eq!(
                compile(not_bool, Var::Claims, Want::Bool).unwrap_err(),
                "must evaluate to bool",
                "{not_bool}"
            );
        }
        for is_bool in [
            "claims.?email_verified.orValue(true) == true",
            "claims.exp - claims.nbf <= 86400",
            "has(claims.x)",
        ] {
            assert!(
                compile(is_bool, Var::Claims, Want::Bool).is_ok(),
                "{is_bool}"
            );
        }
        let err = compile("user.foo == 'x'", Var::User, Want::Bool).unwrap_err();
        assert!(err.contains("undefined field 'foo'"), "{err}");
        assert!(
            compile(
                "user.groups.all(g, !g.startsWith('system:'))",
                Var::User,
                Want::Bool
            )
            .is_ok()
        );
        assert!(
            compile("claims.x", Var::User, Want::Any)
                .unwrap_err()
                .contains("undeclared reference to 'claims'")
        );
        assert!(
            compile("claims.x +", Var::Claims, Want::Any)
                .unwrap_err()
                .starts_with("compilation failed")
        );
        assert!(compile("nosuchfn(claims.x)", Var::Claims, Want::Any).is_err());
    }

    #[test]
    fn the_functions_the_upstream_examples_use() {
        let c = json!({"username": "jane", "roles": "a,b", "sub": "s", "groups": ["g1", "g2"],
            "hd": "example.com", "nested": {"x": "y"}});
        assert_eq!(
            eval("claims.username + ':external-user'", c.clone()),
            Ok(Value::from("jane:external-user"))
        );
        assert_eq!(
            eval("claims.roles.split(',')", c.clone()),
            Ok(Value::List(Arc::new(vec![
                Value::from("a"),
                Value::from("b")
            ])))
        );
        assert_eq!(
            eval("claims.?email_verified.orValue(true)", c.clone()),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("has(claims.hd) && claims.hd == 'example.com'", c.clone()),
            Ok(Value::Bool(true))
        );
        assert_eq!(eval("has(claims.nope)", c.clone()), Ok(Value::Bool(false)));
        assert_eq!(
            eval("dyn(claims.groups).map(g, 'x:' + g)", c.clone()),
            Ok(Value::List(Arc::new(vec![
                Value::from("x:g1"),
                Value::from("x:g2")
            ])))
        );
        assert_eq!(
            eval("dyn(claims.groups).join(',')", c.clone()),
            Ok(Value::from("g1,g2"))
        );
        assert_eq!(
            eval("claims.nested.x.upperAscii()", c.clone()),
            Ok(Value::from("Y"))
        );
        assert_eq!(
            eval("dyn(claims.groups).exists(g, g == 'g2')", c.clone()),
            Ok(Value::Bool(true))
        );
        assert!(
            eval("claims.nope", c).is_err(),
            "a missing claim is an error"
        );
    }

    #[test]
    fn a_runaway_expression_is_cut_by_the_budget() {
        let big: Vec<String> = (0..2000).map(|i| format!("g{i}")).collect();
        let c = json!({"groups": big});
        let err = eval(
            "dyn(claims.groups).map(a, dyn(claims.groups).map(b, a + b)).size() > 0",
            c.clone(),
        )
        .unwrap_err();
        assert!(err.contains("cost limit"), "{err}");
        // Building a huge value is cut as well.
        let err = eval(
            "dyn(claims.groups).map(a, dyn(claims.groups).join(',')).size()",
            c.clone(),
        )
        .unwrap_err();
        assert!(err.contains("cost limit"), "{err}");
        // One pass over the same list is well within it.
        assert!(eval("dyn(claims.groups).map(a, a + ':x').size()", c).is_ok());
    }

    #[test]
    fn claim_fields_are_what_can_be_read() {
        let f = |src: &str| compile(src, Var::Claims, Want::Any).unwrap().claim_fields();
        assert_eq!(
            f("claims.email + claims.?x.orValue('') + dyn(claims.groups).join(',')"),
            Some(vec![
                "email".to_owned(),
                "x".to_owned(),
                "groups".to_owned()
            ])
        );
        assert_eq!(
            f("has(claims.hd) && claims.hd.a == 'b'"),
            Some(vec!["hd".to_owned(), "hd".to_owned()])
        );
        for all in [
            "string(claims)",
            "claims['email']",
            "dyn(claims).size()",
            "[1].map(claims, claims)",
        ] {
            assert_eq!(f(all), None, "{all}");
        }
        // The same answers with only those claims bound.
        let c = serde_json::json!({"email": "e", "x": "y", "groups": ["a"], "other": 1});
        let m = c.as_object().unwrap();
        let e = compile(
            "claims.email + claims.?x.orValue('') + dyn(claims.groups).join(',')",
            Var::Claims,
            Want::Any,
        )
        .unwrap();
        let fields = e.claim_fields().unwrap();
        assert_eq!(
            e.eval(&Bindings::claims_only(m, &fields)),
            e.eval(&Bindings::claims(m))
        );
    }

    #[test]
    fn reads_claim_sees_plain_and_optional_selects() {
        let e = compile(
            "claims.email + claims.?email_verified.orValue('')",
            Var::Claims,
            Want::Any,
        )
        .unwrap();
        assert!(e.reads_claim("email"));
        assert!(e.reads_claim("email_verified"));
        assert!(!e.reads_claim("sub"));
    }
}
