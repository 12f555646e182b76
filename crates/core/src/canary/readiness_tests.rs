use super::*;

fn at(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).unwrap()
}

#[test]
fn unknown_counts_carry_their_reason() {
    let s = status_of(Err("no Deployment x".into()), Some(Ok(3)), at(0));
    assert_eq!(s.canary_ready, None);
    assert_eq!(s.stable_ready, Some(3));
    assert_eq!(s.message.as_deref(), Some("canary: no Deployment x"));
    let s = status_of(Ok(2), None, at(0));
    assert_eq!(
        (s.canary_ready, s.stable_ready, s.message),
        (Some(2), None, None)
    );
}

#[test]
fn template_hashes_ignore_key_order_and_change_with_the_template() {
    let a: serde_json::Value = serde_json::from_str(
        r#"{"metadata":{"labels":{"app":"reviews","version":"v2"}},"spec":{"containers":[{"name":"reviews","image":"reviews:2.1.0"}]}}"#,
    )
    .unwrap();
    let b: serde_json::Value = serde_json::from_str(
        r#"{"spec":{"containers":[{"image":"reviews:2.1.0","name":"reviews"}]},"metadata":{"labels":{"version":"v2","app":"reviews"}}}"#,
    )
    .unwrap();
    let t = workload_template(&a);
    assert_eq!(t.hash, template_hash(&b), "key order does not matter");
    assert_eq!(t.hash.len(), TEMPLATE_HASH_LEN);
    assert!(
        t.hash
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(t.images, ["reviews:2.1.0"]);
    let mut c = a.clone();
    c["spec"]["containers"][0]["image"] = "reviews:2.2.0".into();
    assert_ne!(template_hash(&c), t.hash, "a new image is a new template");
    // Array order is part of the template.
    let d = serde_json::json!({"spec": {"containers": [
        {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
    let e = serde_json::json!({"spec": {"containers": [
        {"name": "b", "image": "b:1"}, {"name": "a", "image": "a:1"}]}});
    assert_ne!(template_hash(&d), template_hash(&e));
    // Bounded: many or long images are cut.
    let many: Vec<serde_json::Value> = (0..20)
        .map(|i| serde_json::json!({"name": format!("c{i}"), "image": "x".repeat(500)}))
        .collect();
    let t = workload_template(&serde_json::json!({"spec": {"containers": many}}));
    assert_eq!(t.images.len(), MAX_IMAGES);
    assert_eq!(t.images[0].chars().count(), MAX_IMAGE_LEN + 1);
}

#[test]
fn a_new_template_is_a_change() {
    let a = status_of(Ok(1), None, at(0));
    let t = WorkloadTemplate {
        hash: "0123456789".into(),
        images: vec!["reviews:2".into()],
    };
    let b = with_template(status_of(Ok(1), None, at(1)), Some(t.clone()));
    assert!(changed(Some(&a), &b));
    assert!(!changed(Some(&b), &with_template(b.clone(), Some(t))));
    assert_eq!(b.images, ["reviews:2"]);
}

#[test]
fn only_changes_count_not_the_time() {
    let a = status_of(Ok(1), None, at(0));
    assert!(changed(None, &a));
    assert!(!changed(Some(&a), &status_of(Ok(1), None, at(5))));
    assert!(changed(Some(&a), &status_of(Ok(0), None, at(5))));
    assert!(changed(
        Some(&a),
        &status_of(Err("gone".into()), None, at(5))
    ));
}

/// What a source that counts 2 canary and 5 stable ready pods makes of `plan`, and the
/// query it was asked (none for [`ReadPlan::Unknown`]).
fn answer(plan: ReadPlan, now: DateTime<Utc>) -> (ReadinessStatus, Option<ReadinessQuery>) {
    match plan {
        ReadPlan::Unknown(s) => (s, None),
        ReadPlan::Ask {
            query,
            stable_error,
        } => {
            let stable = query.stable.as_ref().map(|_| Ok(5));
            let status = complete_read(status_of(Ok(2), stable, now), stable_error);
            (status, Some(query))
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn from_subset(extra: &[(&str, &str)]) -> WorkloadRef {
    WorkloadRef {
        from_subset: true,
        selector: (!extra.is_empty()).then(|| crate::resources::canary::PodSelector {
            match_labels: labels(extra),
        }),
        ..WorkloadRef::default()
    }
}

fn query(canary: WorkloadRef, stable: Option<WorkloadRef>) -> ReadinessQuery {
    ReadinessQuery {
        namespace: "bookinfo".into(),
        workload: canary,
        stable,
        canary_service: None,
    }
}

fn refs() -> SubsetRefs {
    SubsetRefs {
        destination_rule: "DestinationRule bookinfo/reviews".into(),
        canary: "v2".into(),
        stable: "v1".into(),
    }
}

fn dr(subsets: serde_json::Value) -> Result<serde_json::Value, String> {
    Ok(serde_json::json!({"spec": {"host": "reviews", "subsets": subsets}}))
}

fn selector_of(r: &WorkloadRef) -> std::collections::BTreeMap<String, String> {
    assert!(!r.from_subset && r.kind.is_none(), "{r:?}");
    r.selector.clone().unwrap().match_labels
}

#[test]
fn from_subset_refs_count_the_subsets_labels_and_their_own() {
    let q = query(from_subset(&[("app", "reviews")]), Some(from_subset(&[])));
    let dr = dr(serde_json::json!([
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2"}}
    ]));
    let (s, asked) = answer(plan_read(&q, Some((&refs(), &dr)), at(0)), at(0));
    assert_eq!(
        (s.canary_ready, s.stable_ready, s.message),
        (Some(2), Some(5), None)
    );
    let asked = asked.expect("asked");
    assert_eq!(
        selector_of(&asked.workload),
        labels(&[("app", "reviews"), ("version", "v2")])
    );
    assert_eq!(
        selector_of(asked.stable.as_ref().unwrap()),
        labels(&[("version", "v1")])
    );
    // References that name their workload are asked as they are.
    let named = WorkloadRef {
        kind: Some(crate::resources::canary::WorkloadKind::Deployment),
        name: Some("reviews-v1".into()),
        ..WorkloadRef::default()
    };
    let q = query(from_subset(&[]), Some(named.clone()));
    let (_, asked) = answer(plan_read(&q, Some((&refs(), &dr)), at(0)), at(0));
    assert_eq!(asked.expect("asked").stable, Some(named.clone()));
    // Without fromSubset nothing is resolved.
    let q = query(named, None);
    assert_eq!(
        plan_read(&q, None, at(0)),
        ReadPlan::Ask {
            query: q.clone(),
            stable_error: None
        }
    );
}

#[test]
fn a_missing_destination_rule_or_subset_is_unknown_and_never_counted() {
    let q = query(from_subset(&[]), Some(from_subset(&[])));
    // The DestinationRule cannot be read: neither side is counted, nothing is asked.
    let gone: Result<serde_json::Value, String> =
        Err("DestinationRule bookinfo/reviews not found".into());
    let (s, asked) = answer(plan_read(&q, Some((&refs(), &gone)), at(0)), at(0));
    assert_eq!(
        (s.canary_ready, s.stable_ready, &asked),
        (None, None, &None)
    );
    assert_eq!(
        s.message.as_deref(),
        Some(
            "canary: DestinationRule bookinfo/reviews not found; \
             stable: DestinationRule bookinfo/reviews not found"
        )
    );
    // The canary's subset is missing: unknown, and the stable side is not counted either.
    let only_v1 = dr(serde_json::json!([{"name": "v1", "labels": {"version": "v1"}}]));
    let (s, asked) = answer(plan_read(&q, Some((&refs(), &only_v1)), at(0)), at(0));
    assert_eq!(
        (s.canary_ready, s.stable_ready, &asked),
        (None, None, &None)
    );
    let m = s.message.unwrap();
    assert!(
        m.starts_with("canary: DestinationRule bookinfo/reviews: subset v2 not found"),
        "{m}"
    );
    // The stable subset is missing: the canary is counted, the stable side is unknown.
    let only_v2 = dr(serde_json::json!([{"name": "v2", "labels": {"version": "v2"}}]));
    let (s, asked) = answer(plan_read(&q, Some((&refs(), &only_v2)), at(0)), at(0));
    assert_eq!((s.canary_ready, s.stable_ready), (Some(2), None));
    assert_eq!(
        s.message.as_deref(),
        Some("stable: DestinationRule bookinfo/reviews: subset v1 not found")
    );
    assert_eq!(asked.expect("asked").stable, None);
    // Own labels that contradict the subset's select nothing: unknown, not 0.
    let q = query(from_subset(&[("version", "v3")]), None);
    let (s, _) = answer(plan_read(&q, Some((&refs(), &only_v2)), at(0)), at(0));
    assert_eq!(s.canary_ready, None);
    assert!(s.message.unwrap().contains("contradicts label version=v2"));
}

#[test]
fn a_stable_error_joins_the_sources_own_message() {
    let from_source = status_of(Err("no Deployment reviews-v2".into()), Some(Ok(3)), at(0));
    let s = complete_read(from_source.clone(), Some("subset v1 not found".into()));
    assert_eq!(s.stable_ready, None);
    assert_eq!(
        s.message.as_deref(),
        Some("canary: no Deployment reviews-v2; stable: subset v1 not found")
    );
    assert_eq!(complete_read(from_source.clone(), None), from_source);
}

#[test]
fn subset_refs_name_the_destination_rule_only_when_a_side_reads_it() {
    let doc = |refs: serde_json::Value| -> CanaryDoc {
        let mut spec = serde_json::json!({
            "trafficRouting": {"istio": {
                "virtualService": {"name": "reviews"},
                "destinationRule": {"name": "reviews.mesh", "stableSubsetName": "v1",
                    "canarySubsetName": "v2"}}}
        });
        spec.as_object_mut()
            .unwrap()
            .extend(refs.as_object().unwrap().clone());
        serde_json::from_value(serde_json::json!({
            "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": spec
        }))
        .unwrap()
    };
    let stable_only = doc(serde_json::json!({
        "workloadRef": {"kind": "Deployment", "name": "reviews-v2"},
        "stableWorkloadRef": {"fromSubset": true}
    }));
    assert_eq!(
        SubsetRefs::of(&stable_only, "bookinfo"),
        Some(SubsetRefs {
            destination_rule: "DestinationRule mesh/reviews".into(),
            canary: "v2".into(),
            stable: "v1".into(),
        })
    );
    let named = doc(serde_json::json!({
        "workloadRef": {"kind": "Deployment", "name": "reviews-v2"}
    }));
    assert_eq!(SubsetRefs::of(&named, "bookinfo"), None);
}
