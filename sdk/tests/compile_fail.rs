//! Typed definitions are checked at compile time: code that passes an activity, a workflow or
//! a signal the wrong type does not build. Each case in `ui/` must fail to compile with the
//! error recorded beside it (`TRYBUILD=overwrite` records a changed one).

#[test]
fn wrong_types_do_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
