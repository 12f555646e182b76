use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::resources::yaml::MANIFEST_LIMITS;

/// Hand-formatted, commented, mixed flow and block styles, odd indentation.
const DOC: &str = "\
# Reviews routing. Owned by team-books; weights are set by skycanary.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews        # keep in sync with the Service
  namespace: 'bookinfo'
spec:
  hosts: [reviews, \"reviews.bookinfo.svc.cluster.local\"]
  http:
  # the route skycanary manages
  - name: primary
    timeout: 5s
    route:
        - destination: {host: reviews-stable, port: {number: 9080}}
          weight: 100   # stable
        - destination:
            host: reviews-canary
          weight: 0     # canary
  - name: fallback
    route: [{destination: {host: reviews-stable}}]
";

fn value(src: &str) -> Value {
    parse_documents_with(src, &MANIFEST_LIMITS).unwrap()[0]
        .value
        .clone()
}

fn edit(src: &str, new: &Value) -> Result<String, EditError> {
    edit_document(src, &value(src), new, &MANIFEST_LIMITS)
}

#[test]
fn a_weight_change_rewrites_only_the_weights() {
    let mut v = value(DOC);
    v["spec"]["http"][0]["route"][0]["weight"] = json!(90);
    v["spec"]["http"][0]["route"][1]["weight"] = json!(10);
    let out = edit(DOC, &v).unwrap();
    let want = DOC
        .replace("weight: 100   # stable", "weight: 90   # stable")
        .replace("weight: 0     # canary", "weight: 10     # canary");
    assert_eq!(out, want);
}

#[test]
fn an_added_key_is_inserted_after_the_last_entry_at_its_indentation() {
    let mut v = value(DOC);
    v["metadata"]["annotations"] = json!({"skycanary.io/original-routes": "{\"a\":[1]}"});
    let out = edit(DOC, &v).unwrap();
    let want = DOC.replace(
        "  namespace: 'bookinfo'\n",
        "  namespace: 'bookinfo'\n  annotations:\n    skycanary.io/original-routes: \"{\\\"a\\\":[1]}\"\n",
    );
    assert_eq!(out, want);
    // ... and removing it again gives back the original bytes.
    assert_eq!(
        edit_document(&out, &v, &value(DOC), &MANIFEST_LIMITS).unwrap(),
        DOC
    );
}

#[test]
fn flow_mappings_take_and_lose_keys_in_place() {
    let src = "metadata: {name: r, namespace: b}  # c\nspec: {}\n";
    let mut v = value(src);
    v["metadata"]["annotations"] = json!({"k": "v w"});
    let out = edit(src, &v).unwrap();
    assert_eq!(
        out,
        "metadata: {name: r, namespace: b, annotations: {k: \"v w\"}}  # c\nspec: {}\n"
    );
    assert_eq!(
        edit_document(&out, &v, &value(src), &MANIFEST_LIMITS).unwrap(),
        src
    );
    // The first key removed.
    let mut w = value(src);
    w["metadata"].as_object_mut().unwrap().remove("name");
    assert_eq!(
        edit(src, &w).unwrap(),
        "metadata: {namespace: b}  # c\nspec: {}\n"
    );
}

#[test]
fn quoted_strings_keep_their_quotes() {
    let mut v = value(DOC);
    v["metadata"]["namespace"] = json!("books");
    v["spec"]["hosts"][1] = json!("reviews.books.svc.cluster.local");
    let out = edit(DOC, &v).unwrap();
    assert_eq!(
        out,
        DOC.replace("'bookinfo'", "'books'")
            .replace("\"reviews.bookinfo.svc", "\"reviews.books.svc")
    );
}

#[test]
fn a_string_that_would_read_as_another_type_is_quoted() {
    let src = "a: x\nb: [y]\n";
    for s in ["10", "true", "null", "a: b", "", "- x", "#c", "x y"] {
        let new = json!({"a": s, "b": [s]});
        let out = edit(src, &new).unwrap();
        assert_eq!(value(&out), new, "{s:?} -> {out}");
    }
}

#[test]
fn a_sequence_that_grows_is_re_rendered_alone() {
    let src = "\
spec:
  # routes
  route:
  - destination: {host: stable}   # only stable
    weight: 100
  other: 1   # kept
";
    let mut v = value(src);
    v["spec"]["route"][0]["weight"] = json!(80);
    v["spec"]["route"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": {"host": "canary"}, "weight": 20}));
    let out = edit(src, &v).unwrap();
    assert_eq!(
        out,
        "\
spec:
  # routes
  route:
  - destination: {host: stable}   # only stable
    weight: 80
  - destination: {host: canary}
    weight: 20
  other: 1   # kept
"
    );
}

#[test]
fn crlf_and_non_ascii_text_are_kept() {
    let src = "# café\r\nmetadata:\r\n  name: ré\r\nspec:\r\n  w: 1\r\n";
    let mut v = value(src);
    v["spec"]["w"] = json!(2);
    v["spec"]["x"] = json!("ü");
    let out = edit(src, &v).unwrap();
    assert_eq!(
        out,
        "# café\r\nmetadata:\r\n  name: ré\r\nspec:\r\n  w: 2\r\n  x: \"ü\"\r\n"
    );
}

#[test]
fn what_is_not_edited_in_place_is_refused_not_mangled() {
    let mut new = json!({"a": {"x": 1}, "b": {"x": 2}});
    for (src, why) in [
        ("a: &x {x: 1}\nb: *x\n", "an alias"),
        ("a: !!map {x: 1}\nb: {x: 1}\n", "tag"),
    ] {
        let e = edit(src, &new).unwrap_err();
        assert!(matches!(e, EditError::Unsupported(_)), "{why}: {e:?}");
    }
    new = json!({"a": "new\ntext"});
    let e = edit("a: |\n  old\n", &new).unwrap_err();
    assert!(matches!(e, EditError::Unsupported(_)), "{e:?}");
}

#[test]
fn a_document_left_unchanged_is_byte_identical() {
    assert_eq!(edit(DOC, &value(DOC)).unwrap(), DOC);
}

/// One random change to a JSON document: a scalar replaced, a key added or removed, an item
/// pushed or popped.
#[derive(Debug, Clone)]
enum Change {
    Scalar(usize, Value),
    AddKey(usize, String, Value),
    RemoveKey(usize),
    Push(usize, Value),
    Pop(usize),
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-1000i64..1000).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        "[a-z0-9 :#'\"\né\t{}-]{0,8}".prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn any_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (any::<usize>(), leaf()).prop_map(|(i, v)| Change::Scalar(i, v)),
        (any::<usize>(), "[a-z]{1,6}", any_value()).prop_map(|(i, k, v)| Change::AddKey(i, k, v)),
        any::<usize>().prop_map(Change::RemoveKey),
        (any::<usize>(), any_value()).prop_map(|(i, v)| Change::Push(i, v)),
        any::<usize>().prop_map(Change::Pop),
    ]
}

/// Pointers to every node of `v`, for picking where a change goes.
fn nodes(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| nodes(x, format!("{at}/{i}"), out)),
        Value::Object(o) => o
            .iter()
            .for_each(|(k, x)| nodes(x, format!("{at}/{k}"), out)),
        _ => {}
    }
}

fn mutate(v: &mut Value, c: &Change) {
    let mut all = Vec::new();
    nodes(v, String::new(), &mut all);
    let pick = |i: usize, want: fn(&Value) -> bool, v: &Value| {
        let fit: Vec<&String> = all
            .iter()
            .filter(|p| v.pointer(p).is_some_and(want))
            .collect();
        (!fit.is_empty()).then(|| fit[i % fit.len()].clone())
    };
    match c {
        Change::Scalar(i, x) => {
            if let Some(p) = pick(*i, |n| !n.is_array() && !n.is_object(), v)
                && !p.is_empty()
            {
                *v.pointer_mut(&p).unwrap() = x.clone();
            }
        }
        Change::AddKey(i, k, x) => {
            if let Some(p) = pick(*i, Value::is_object, v) {
                v.pointer_mut(&p)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .insert(k.clone(), x.clone());
            }
        }
        Change::RemoveKey(i) => {
            if let Some(p) = pick(*i, |n| n.as_object().is_some_and(|o| !o.is_empty()), v) {
                let o = v.pointer_mut(&p).unwrap().as_object_mut().unwrap();
                let k = o.keys().nth(i % o.len()).unwrap().clone();
                o.remove(&k);
            }
        }
        Change::Push(i, x) => {
            if let Some(p) = pick(*i, Value::is_array, v) {
                v.pointer_mut(&p)
                    .unwrap()
                    .as_array_mut()
                    .unwrap()
                    .push(x.clone());
            }
        }
        Change::Pop(i) => {
            if let Some(p) = pick(*i, Value::is_array, v) {
                v.pointer_mut(&p).unwrap().as_array_mut().unwrap().pop();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any sequence of changes to the hand-formatted manifest edits in place (no fallback
    /// needed), reads back as exactly the intended value, and keeps the header comment.
    #[test]
    fn edits_read_back_as_the_intended_value(changes in prop::collection::vec(change(), 1..5)) {
        let mut src = DOC.to_string();
        let mut old = value(DOC);
        for c in &changes {
            let mut new = old.clone();
            mutate(&mut new, c);
            let out = edit_document(&src, &old, &new, &MANIFEST_LIMITS);
            let out = match out {
                Ok(out) => out,
                Err(e) => return Err(TestCaseError::fail(format!("{c:?} on\n{src}\n: {e}"))),
            };
            prop_assert_eq!(value(&out), new.clone());
            prop_assert!(out.starts_with("# Reviews routing."));
            src = out;
            old = new;
        }
    }
}

/// A managed header route goes first in `http`: it is inserted as lines before the first
/// route, styled after it; the other routes keep their comments. Removing it cuts its lines.
#[test]
fn a_route_added_first_is_inserted_as_lines() {
    let mut v = value(DOC);
    let mut header = v["spec"]["http"][0].clone();
    header["name"] = json!("canary-header");
    header["match"] = json!([{"headers": {"x-canary": {"exact": "1"}}}]);
    v["spec"]["http"].as_array_mut().unwrap().insert(0, header);
    let out = edit(DOC, &v).unwrap();
    let want = DOC.replace(
        "  # the route skycanary manages\n",
        "  # the route skycanary manages\n  - name: canary-header\n    timeout: 5s\n    route:\n      - destination: {host: reviews-stable, port: {number: 9080}}\n        weight: 100\n      - destination:\n          host: reviews-canary\n        weight: 0\n    match:\n      - headers:\n          x-canary:\n            exact: \"1\"\n",
    );
    assert_eq!(out, want);
    assert_eq!(
        edit_document(&out, &v, &value(DOC), &MANIFEST_LIMITS).unwrap(),
        DOC
    );
}
