//! Integration tests of the login plugin: the binary itself as kubectl runs
//! it, against loopback stand-ins of Keystone, resmgr, Dex and EFA from the
//! test kit, and the real webhook verifying what it hands out. One test
//! binary, so the suite links once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod login;
