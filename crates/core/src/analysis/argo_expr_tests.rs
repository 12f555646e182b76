use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use super::*;
use crate::analysis::{
    Condition, ConditionLanguage, MetricSpec, NoDataPolicy, Observation, Phase, ResultValue, judge,
};

/// What a case expects of one condition.
#[derive(Debug)]
enum Want {
    True,
    False,
    /// An error whose message contains this.
    Err(&'static str),
}

fn eval_json(result: &Json, src: &str) -> Result<bool, String> {
    let c = ArgoCondition::compile(src).map_err(|e| e.to_string())?;
    c.eval(&json_to_value(result), &BTreeMap::new())
        .map_err(|e| e.to_string())
}

fn check(result: &Json, src: &str, want: &Want) {
    let got = eval_json(result, src);
    match (want, &got) {
        (Want::True, Ok(true)) | (Want::False, Ok(false)) => {}
        (Want::Err(part), Err(msg)) if msg.contains(part) => {}
        _ => panic!("{src} on {result}: want {want:?}, got {got:?}"),
    }
}

/// Argo's `utils/evaluate/evaluate_test.go` `EvalCondition` cases, as data:
/// (test name, `result`, condition, expected). Go inputs that JSON cannot hold (typed nil
/// pointers) are covered by the `isNil`/`default` cases below.
const EVAL_CONDITION_CASES: &[(&str, &str, &str, Want)] = &[
    (
        "TestEvaluateConditionWithSuccess",
        "true",
        "result == true",
        Want::True,
    ),
    (
        "TestEvaluateConditionWithFailure",
        "true",
        "result == false",
        Want::False,
    ),
    (
        "TestErrorWithNonBoolReturn",
        "true",
        "1",
        Want::Err("expected bool, but got int"),
    ),
    (
        "TestErrorWithInvalidReference",
        "true",
        "invalidVariable",
        Want::Err("unknown name invalidVariable"),
    ),
    (
        "TestEvaluateArray",
        r#"{"service_apdex":{"label":null,"values":{"values":[2,2]}}}"#,
        "all(result.service_apdex.values.values, {# > 1})",
        Want::True,
    ),
    ("TestEvaluateInOperator", "[2,2]", "2 in result", Want::True),
    ("TestEvaluateFloat64", "5", "result > 1", Want::True),
    (
        "TestEvaluateInvalidStruct",
        "true",
        "result.Name() == 'hi'",
        Want::Err(""),
    ),
    (
        "TestEvaluateAsIntPanic",
        r#""1.1""#,
        "asInt(result) == 1.1",
        Want::Err("invalid syntax"),
    ),
    (
        "TestEvaluateAsInt/string",
        r#""1""#,
        "asInt(result) == 1",
        Want::True,
    ),
    (
        "TestEvaluateAsInt/int",
        "1",
        "asInt(result) == 1",
        Want::True,
    ),
    (
        "TestEvaluateAsInt/float",
        "1.123",
        "asInt(result) == 1",
        Want::True,
    ),
    (
        "TestEvaluateAsFloatError/NotANum",
        r#""NotANum""#,
        "asFloat(result) == 1.1",
        Want::Err(r#"strconv.ParseFloat: parsing "NotANum": invalid syntax"#),
    ),
    (
        "TestEvaluateAsFloatError/string",
        r#""1.1""#,
        r#"asFloat(result) == "1.1""#,
        Want::Err("invalid operation: == (mismatched types float64 and string)"),
    ),
    (
        "TestEvaluateAsFloat/==",
        r#""1.1""#,
        "asFloat(result) == 1.1",
        Want::True,
    ),
    (
        "TestEvaluateAsFloat/>=",
        r#""1.1""#,
        "asFloat(result) >= 1.1",
        Want::True,
    ),
    (
        "TestEvaluateAsFloat/<=",
        r#""1.1""#,
        "asFloat(result) <= 1.1",
        Want::True,
    ),
    (
        "TestEvaluateAsFloat/float",
        "1.1",
        "asFloat(result) == 1.1",
        Want::True,
    ),
    (
        "TestEvaluateAsFloat/int==",
        "1",
        "asFloat(result) == 1",
        Want::True,
    ),
    (
        "TestEvaluateAsFloat/int>=",
        "1",
        "asFloat(result) >= 1",
        Want::True,
    ),
    (
        "TestIsInf",
        "1",
        "isInf(asFloat(\"+Inf\")) && !isInf(0.0)",
        Want::True,
    ),
    (
        "TestAsInt/notint",
        r#""notint""#,
        "asInt(result) == 1",
        Want::Err("invalid syntax"),
    ),
    (
        "TestAsFloat/1",
        r#""1""#,
        "asFloat(result) == 1",
        Want::True,
    ),
    (
        "TestAsFloat/notfloat",
        r#""notfloat""#,
        "asFloat(result) == 1",
        Want::Err("invalid syntax"),
    ),
    ("TestIsNil/non-nil", "1", "isNil(result)", Want::False),
    ("TestIsNil/nil", "null", "isNil(result)", Want::True),
    (
        "TestDefaultFunc/nil",
        "null",
        "default(result, 2) == 2",
        Want::True,
    ),
    (
        "TestDefaultFunc/non-nil",
        "1",
        "default(result, 0) == 1",
        Want::True,
    ),
    (
        "Docs/NaN guard",
        "0.96",
        "isNaN(result) || result >= 0.95",
        Want::True,
    ),
    (
        "Docs/empty guard",
        "[]",
        "len(result) == 0 || result[0] >= 0.95",
        Want::True,
    ),
    ("Docs/first", "[0.97, 0.5]", "result[0] >= 0.95", Want::True),
];

#[test]
fn argo_evaluate_test_table() {
    for (name, result, src, want) in EVAL_CONDITION_CASES {
        let result: Json = serde_json::from_str(result).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = eval_json(&result, src);
        match (want, &got) {
            (Want::True, Ok(true)) | (Want::False, Ok(false)) => {}
            (Want::Err(part), Err(msg)) if msg.contains(part) => {}
            _ => panic!("{name}: {src} on {result}: want {want:?}, got {got:?}"),
        }
    }
}

fn expr_spec(s: Option<&str>, f: Option<&str>) -> MetricSpec {
    let c = |src: &str| Condition::compile_as(ConditionLanguage::Expr, src, &[]).expect(src);
    let mut m = MetricSpec::new("m");
    m.success_condition = s.map(c);
    m.failure_condition = f.map(c);
    m
}

fn data_obs(data: Json) -> Observation {
    Observation::Value {
        result: ResultValue::Series(Vec::new()),
        named: BTreeMap::new(),
        display: data.to_string(),
        data: Some(data),
    }
}

/// Argo's `EvaluateResult` cases (success, failure, expected phase) with `result = true`,
/// through [`judge`]; the nil/empty-result cases expect DESIGN's `noData` instead of Argo's
/// Error (no data never reaches the conditions).
#[test]
fn argo_evaluate_result_table() {
    let cases: &[(&str, Option<&str>, Option<&str>, Phase)] = &[
        (
            "TestEvaluateResultWithSuccess",
            Some("true"),
            Some("false"),
            Phase::Successful,
        ),
        (
            "TestEvaluateResultWithFailure",
            Some("true"),
            Some("true"),
            Phase::Failed,
        ),
        (
            "TestEvaluateResultInconclusive",
            Some("false"),
            Some("false"),
            Phase::Inconclusive,
        ),
        (
            "...NoSuccessConditionAndNotFailing",
            None,
            Some("false"),
            Phase::Successful,
        ),
        (
            "...NoFailureConditionAndNotSuccessful",
            Some("false"),
            None,
            Phase::Failed,
        ),
        (
            "...NoFailureConditionAndNoSuccessCondition",
            None,
            None,
            Phase::Successful,
        ),
        // Argo's `a == true` (an unknown name) is refused when the template loads (below); a
        // condition that fails only at evaluation stands in for it here.
        (
            "TestEvaluateResultWithErrorOnSuccessCondition",
            Some("result.x.y"),
            Some("true"),
            Phase::Error,
        ),
        (
            "TestEvaluateResultWithErrorOnFailureCondition",
            Some("true"),
            Some("result.x.y"),
            Phase::Error,
        ),
    ];
    for (name, s, f, want) in cases {
        let crate::analysis::Judgement {
            phase,
            message: msg,
            ..
        } = judge(&expr_spec(*s, *f), &data_obs(json!(true)), &BTreeMap::new());
        assert_eq!(phase, *want, "{name}: {msg}");
    }
    assert_eq!(
        Condition::compile_as(ConditionLanguage::Expr, "a == true", &[])
            .expect_err("unknown name")
            .to_string(),
        "condition \"a == true\" is not valid expr (Argo's condition language): unknown name a"
    );
    // The error names the condition and its text, as Argo's does.
    let crate::analysis::Judgement { message: msg, .. } = judge(
        &expr_spec(Some("true"), Some("result.x > 1")),
        &data_obs(json!(true)),
        &BTreeMap::new(),
    );
    assert!(
        msg.contains("could not evaluate failureCondition \"result.x > 1\""),
        "{msg}"
    );
    // TestEvaluateResultErrorMessageWithNilResult / WithEmptySlice: DESIGN: noData decides.
    let mut m = expr_spec(Some("result[0] >= 0.95"), None);
    m.no_data = NoDataPolicy::Inconclusive;
    let obs = Observation::NoData {
        reason: "no data points".into(),
    };
    assert_eq!(judge(&m, &obs, &BTreeMap::new()).phase, Phase::Inconclusive);
}

#[test]
fn docs_skywalking_condition_runs_unchanged() {
    let src = "all(result.service_apdex.values.values, {asFloat(.value) >= 9900})";
    let good = json!({"service_apdex": {"label": null, "values": {"values": [
        {"value": 9950}, {"value": 9930}, {"value": 9901}]}}});
    let bad = json!({"service_apdex": {"label": null, "values": {"values": [
        {"value": 9950}, {"value": 9800}]}}});
    check(&good, src, &Want::True);
    check(&bad, src, &Want::False);
    // The shorthand became `#.value`.
    let c = ArgoCondition::compile(src).expect("compiles");
    assert_eq!(
        c.normalized(),
        "all(result.service_apdex.values.values, {asFloat(#.value) >= 9900})"
    );
}

#[test]
fn issue_examples_run() {
    check(&json!([0.97]), "result[0] >= 0.95", &Want::True);
    check(&json!({"alias": true}), "result.alias", &Want::True);
    check(&json!([1, 2]), "2 in result", &Want::True);
    check(&json!([1, 2]), "3 in result", &Want::False);
    check(
        &json!({"a": [1, 2, 3]}),
        "len(filter(result.a, {# > 1})) == 2",
        &Want::True,
    );
    check(
        &json!({"a": [1, 2, 3]}),
        "any(map(result.a, {# * 2}), {# == 6})",
        &Want::True,
    );
    check(
        &json!({"a": [{"v": "1"}, {"v": "2"}]}),
        "any(result.a, {asInt(.v) == 2})",
        &Want::True,
    );
    check(
        &json!(1),
        "!isNil(result) && !isInf(asFloat(result)) && !isNaN(asFloat(result))",
        &Want::True,
    );
}

/// The builtins README lists, each once.
#[test]
fn listed_builtins_work() {
    let d = json!({"a": [1, 2, 3], "s": "ok-1", "m": {"k": 1}});
    for src in [
        "one(result.a, {# == 2}) && none(result.a, {# > 3})",
        "find(result.a, {# > 1}) == 2 && count(result.a, {# > 1}) == 2",
        "sum(result.a) == 6 && mean(result.a) == 2 && median(result.a) == 2",
        "min(result.a) == 1 && max(result.a) == 3 && abs(-1) == 1",
        "first(result.a) == 1 && last(result.a) == 3",
        r#"result.s matches "^ok-[0-9]$" && "k" in result.m"#,
        r#"default(result, 0) == result && !isNil(1)"#,
    ] {
        check(&d, src, &Want::True);
    }
}

#[test]
fn shorthand_is_only_rewritten_where_an_operand_starts() {
    let n = |src: &str| {
        ArgoCondition::compile(src)
            .expect(src)
            .normalized()
            .to_string()
    };
    // Member access, `?.`, decimals and strings are left alone.
    assert_eq!(
        n("all(result.a, {#.b.c > .5})"),
        "all(result.a, {#.b.c > .5})"
    );
    assert_eq!(
        n("all(result.a, {.b?.c == nil})"),
        "all(result.a, {#.b?.c == nil})"
    );
    assert_eq!(
        n(r#"all(result.a, {.b == ".c"})"#),
        r#"all(result.a, {#.b == ".c"})"#
    );
    assert_eq!(
        n("all(result.a, {not .b and .c})"),
        "all(result.a, {not #.b and #.c})"
    );
    assert_eq!(n("all(result.a, {(.b)})"), "all(result.a, {(#.b)})");
    // Outside braces nothing changes (expr's own `.field` predicate form).
    assert_eq!(n("result.a > 1"), "result.a > 1");
}

#[test]
fn number_vs_string_is_an_error_never_false() {
    // Known from the text: refused at compile time.
    for src in [
        r#"asFloat(result) == "1.1""#,
        r#""1" != 1"#,
        r#"len(result) == "2""#,
        r#"all(result, {asInt(.v) == "2"})"#,
    ] {
        let e = ArgoCondition::compile(src).expect_err(src);
        assert!(matches!(e, ArgoExprError::Mismatch { .. }), "{src}: {e}");
    }
    // Known only from the data: an Error at evaluation, in either order and either side.
    check(
        &json!({"count": 10}),
        r#"result.count == "10""#,
        &Want::Err("mismatched types float64 and string"),
    );
    check(
        &json!({"count": "10"}),
        "result.count != 10",
        &Want::Err("mismatched types string and int"),
    );
    check(
        &json!({"a": [{"b": 1}]}),
        r#""1" == result.a[0].b"#,
        &Want::Err("mismatched types string and float64"),
    );
    check(
        &json!({"a": [{"b": 1}]}),
        r#"result["a"][-1].b == "1""#,
        &Want::Err("mismatched"),
    );
    // Inside predicates over a `result` path: each element is checked.
    let d = json!({"a": [{"v": 1, "b": [1, 2]}, {"v": 2, "b": ["x"]}]});
    check(
        &d,
        r#"all(result.a, {.v == "1"})"#,
        &Want::Err("mismatched types float64 and string"),
    );
    check(
        &d,
        r#"any(result.a, {"2" != #.v})"#,
        &Want::Err("mismatched types string and float64"),
    );
    check(
        &d,
        r#"any(result.a, {all(.b, {# == "x"})})"#,
        &Want::Err("mismatched types float64 and string"),
    );
    check(
        &json!({"a": [1, 2]}),
        r#"none(result.a, {# == "3"})"#,
        &Want::Err("mismatched"),
    );
    check(&d, "all(result.a, {.v >= 1})", &Want::True);
    check(&d, "any(result.a, {.v == 2})", &Want::True);
    // Same types compare as usual; numbers of both kinds compare numerically.
    check(&json!({"count": 10}), "result.count == 10", &Want::True);
    check(&json!({"s": "ok"}), r#"result.s == "ok""#, &Want::True);
    // The comparison is of the whole operand: `result.a + 1` is not the path.
    check(
        &json!({"a": 1}),
        r#"string(result.a + 1) == "2""#,
        &Want::True,
    );
}

#[test]
fn non_bool_is_an_error() {
    check(
        &json!({"a": 1}),
        "result.a",
        &Want::Err("expected bool, but got float64"),
    );
    check(
        &json!({"a": 1}),
        "result",
        &Want::Err("expected bool, but got map[string]interface {}"),
    );
    check(
        &json!([1]),
        "result",
        &Want::Err("expected bool, but got []interface {}"),
    );
}

#[test]
fn unknown_names_and_functions_fail_at_compile_time() {
    assert_eq!(
        ArgoCondition::compile("reslt > 1")
            .expect_err("typo")
            .to_string(),
        "unknown name reslt"
    );
    assert_eq!(
        ArgoCondition::compile("avg(result) > 1")
            .expect_err("no avg")
            .to_string(),
        "unknown func avg"
    );
    // Inside a predicate a bare name may be a field of the element.
    check(&json!([{"v": 2}]), "all(result, {v > 1})", &Want::True);
    // Map keys are not names.
    check(&json!(1), "{a: 1}.a == result", &Want::True);
}

#[test]
fn args_are_variables_not_text() {
    let c = ArgoCondition::compile("result >= {{ args.min-apdex }} && {{args.svc}} == \"reviews\"")
        .expect("compiles");
    let args: BTreeMap<String, String> = [
        ("min-apdex".to_string(), "9900".to_string()),
        ("svc".to_string(), "reviews".to_string()),
    ]
    .into_iter()
    .collect();
    assert_eq!(c.eval(&Value::Float(9950.0), &args), Ok(true));
    assert_eq!(c.eval(&Value::Float(9800.0), &args), Ok(false));
    let names: Vec<&String> = c.arg_names().iter().collect();
    assert_eq!(names, ["min-apdex", "svc"]);
    // A value that looks like code stays a value.
    let evil: BTreeMap<String, String> = [("x".to_string(), "1 || true".to_string())]
        .into_iter()
        .collect();
    let c = ArgoCondition::compile("result == {{args.x}}").expect("compiles");
    assert_eq!(c.eval(&Value::String("1 || true".into()), &evil), Ok(true));
    assert_eq!(c.eval(&Value::String("2".into()), &evil), Ok(false));
    // Inside a string the arg is text, quotes and all.
    let c = ArgoCondition::compile(r#"result == "svc-{{args.x}}!""#).expect("compiles");
    let q: BTreeMap<String, String> = [("x".to_string(), "a\" || true || \"".to_string())]
        .into_iter()
        .collect();
    assert_eq!(
        c.eval(&Value::String("svc-a\" || true || \"!".into()), &q),
        Ok(true)
    );
    assert_eq!(c.eval(&Value::String("svc-a".into()), &q), Ok(false));
    // Unterminated strings and odd bytes are errors, not panics.
    for src in [
        "result == \"é",
        "result[\"é] == 1",
        "result == \"{{args.x}}",
        "result == 'a\\é",
        "résult == 1",
        "result == 1 /* é",
    ] {
        assert!(ArgoCondition::compile(src).is_err(), "{src}");
    }
    // Missing arg, bad tag.
    assert!(c.eval(&Value::Nil, &BTreeMap::new()).is_err());
    assert!(ArgoCondition::compile("result > {{secrets.x}}").is_err());
    assert!(ArgoCondition::compile("result > {{args.x").is_err());
}

#[test]
fn parse_errors_say_where_and_what_was_expected() {
    let e = ArgoCondition::compile("all(result.a, {asFloat(.value) >= })").expect_err("bad");
    let msg = e.to_string();
    assert!(msg.contains("line 1, column 35"), "{msg}");
    assert!(msg.contains("expected a value"), "{msg}");
    assert!(msg.contains("found `}`"), "{msg}");
    // The caret points into the text as written, not the normalised one.
    assert!(
        msg.contains("\n    all(result.a, {asFloat(.value) >= })\n"),
        "{msg}"
    );
    assert!(msg.ends_with(&format!("    {}^", " ".repeat(34))), "{msg}");
    let msg = ArgoCondition::compile("result >")
        .expect_err("bad")
        .to_string();
    assert!(msg.contains("found the end of the condition"), "{msg}");
    let msg = ArgoCondition::compile("result\n  && && true")
        .expect_err("bad")
        .to_string();
    assert!(msg.contains("line 2, column 6"), "{msg}");
}

#[test]
fn work_is_bounded() {
    let long = format!("result == {}", "1".repeat(MAX_LEN));
    assert!(matches!(
        ArgoCondition::compile(&long),
        Err(ArgoExprError::TooLong { .. })
    ));
    let deep = format!(
        "{}true{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert!(matches!(
        ArgoCondition::compile(&deep),
        Err(ArgoExprError::TooDeep { .. })
    ));
    let ok = format!("{}true{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    check(&json!(1), &ok, &Want::True);
    for src in [
        "all(1..1000000000, {# > 0})",
        "let a = 1; a > 0",
        "len(repeat(\"x\", 1000000000)) > 0",
        "reduce(result, #acc + #acc, \"x\") != \"\"",
        "all(result, {all(#, {all(#, {all(#, {true})})})})",
    ] {
        assert!(ArgoCondition::compile(src).is_err(), "{src}");
    }
    // The longest chains the limits allow compile and evaluate on a test thread's 2 MiB stack.
    let chain = |unit: &str, n: usize| unit.repeat(n);
    let m = MAX_OPERATORS - 1;
    for src in [
        format!("1{} > 0", chain(" ^ 1", m)),
        format!("1{} > 0", chain(" + 1", m)),
        format!("1 {}> 0", chain("** 1 ", m)),
        format!("result{} == nil", chain(".a", m)),
        format!("result{} == nil", chain("?.a", m)),
        format!("[[1]]{} == 1", chain("[0]", m - 3)),
        format!("nil{} == 1", chain(" ?? nil", m)),
        format!(
            "{}true{}",
            chain("true ? ", m / 2),
            chain(" : false", m / 2)
        ),
        format!("{}true{}", chain("(!", MAX_DEPTH), chain(")", MAX_DEPTH)),
        format!(
            "{}1{} == 1",
            chain("abs(", MAX_DEPTH),
            chain(")", MAX_DEPTH)
        ),
    ] {
        assert!(src.len() <= MAX_LEN, "{src}");
        let c = ArgoCondition::compile(&src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let _ = c.eval(&json_to_value(&json!({"a": 1})), &BTreeMap::new());
    }
    let over = format!("1{} > 0", chain(" + 1", MAX_OPERATORS + 1));
    assert!(matches!(
        ArgoCondition::compile(&over),
        Err(ArgoExprError::TooManyOperators)
    ));
}

#[test]
fn computed_operands_compared_across_types_are_errors() {
    // Go's expr refuses these at run time (`+`, `<`) or its checker does (`string(x) < 3`);
    // the crate used to answer `false` for every `==`/`!=` among them.
    let mismatch = "mismatched types float64 and string";
    for (data, src, want) in [
        (
            json!({"a": 1}),
            r#"result.a + 1 == "2""#,
            Want::Err(mismatch),
        ),
        (
            json!({"a": 1}),
            r#"result.a + 1 != "2""#,
            Want::Err(mismatch),
        ),
        (json!({"a": 1}), r#"(result.a) == "1""#, Want::Err(mismatch)),
        (
            json!({"a": 1}),
            r#"max(result.a, 0) == "1""#,
            Want::Err(mismatch),
        ),
        (
            json!({"a": "1"}),
            r#"result.a + "" == 1"#,
            Want::Err("mismatched types string and int"),
        ),
        (
            json!({"a": [1]}),
            r#"all(result.a, {# * 1 == "1"})"#,
            Want::Err(mismatch),
        ),
        (
            json!({"a": [1]}),
            r#"filter(result.a, # * 1 == "1") == []"#,
            Want::Err(mismatch),
        ),
        (
            json!({"a": 1}),
            r#"result.a > 0 && result.a * 2 == "2""#,
            Want::Err(mismatch),
        ),
        (
            json!({"a": 1}),
            r#"result.a * 2 == "2" ? true : false"#,
            Want::Err(mismatch),
        ),
        (
            json!({"a": 1}),
            r#"(result.a * 2 == "2") == true"#,
            Want::Err(mismatch),
        ),
        (
            json!({"a": 1}),
            r#"result.a - 1 == 0 == "x""#,
            Want::Err("mismatched types bool and string"),
        ),
        (
            json!(1),
            r#"result + "x" > 1"#,
            Want::Err("Invalid operands for operator +"),
        ),
        (
            json!({"a": "1"}),
            "result.a < 2",
            Want::Err("mismatched types string and int"),
        ),
    ] {
        check(&data, src, &want);
    }
    // Same kinds still compare as before, and nil, arrays and maps keep their answers.
    for (data, src, want) in [
        (json!({"a": 1}), "result.a + 1 == 2", Want::True),
        (json!({"a": 1}), "result.a + 1 != 2.0", Want::False),
        (json!({"a": "x"}), r#"result.a + "y" == "xy""#, Want::True),
        (json!({"a": null}), "result.a == nil", Want::True),
        (json!({"a": 1}), "result.a == nil", Want::False),
        (json!({"a": [1, 2]}), "result.a == [1, 2]", Want::True),
        (
            json!({"a": [1, 2]}),
            "map(result.a, # * 2) == [2, 4]",
            Want::True,
        ),
        (
            json!({"a": 1}),
            "result.a * 2 == 2 and 1 + 1 == 2",
            Want::True,
        ),
        (json!({"a": 1}), "result.a == 1 == true", Want::True),
        (json!({"a": 1}), "result.a in [1, 2] == true", Want::True),
        (json!({"a": 1}), "not (result.a == 2)", Want::True),
        (
            json!({"a": [1, 2]}),
            "any(result.a, {# - 1 == 1})",
            Want::True,
        ),
        (
            json!({"a": 1}),
            r#"(result.a == 1 ? "y" : "n") == "y""#,
            Want::True,
        ),
    ] {
        check(&data, src, &want);
    }
    // Text-visible mismatches of the ordering operators are refused at load, like `==`.
    let e = ArgoCondition::compile("string(result) < 3").expect_err("refused");
    assert_eq!(
        e.to_string(),
        "invalid operation: < (mismatched types string and int)"
    );
}

#[test]
fn equality_is_rewritten_along_the_grammar() {
    let g = |s: &str| guard_equality(s).expect(s);
    assert_eq!(g("a + 1 == \"2\""), "$eq(a + 1 , \"2\")");
    assert_eq!(g("a == b == c"), "$eq($eq(a , b) , c)");
    assert_eq!(g("x && a != b || c"), "x && $ne(a , b) || c");
    assert_eq!(g("all(r, {#.v * 2 == 1})"), "all(r, {$eq(#.v * 2 , 1)})");
    assert_eq!(g("a==b ? c : d==e"), "$eq(a,b) ? c : $eq(d,e)");
    assert_eq!(g("a < b == c in d"), "$eq(a < b , c) in d");
    assert_eq!(g("r.and == 1"), "$eq(r.and , 1)");
    assert_eq!(g("f(a) == g(b)[0].c ?? 1"), "$eq(f(a) , g(b)[0].c ?? 1)");
    assert_eq!(g("result > 1"), "result > 1");
}
