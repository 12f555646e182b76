//! The served schema slice, written per profile as SDL text.
//!
//! Only the parts skycanary (and swctl-like clients) touch are served, but each
//! type carries exactly the fields and arguments its OAP release has, so clients
//! selecting a field that is too new (or too old) hit a real validation error.

use super::profile::OapProfile;

/// Builds the SDL for one profile. Written by hand from the release notes/facts.
pub fn sdl(p: OapProfile) -> String {
    let mut s = String::new();
    let v95 = p.at_least(9, 5);
    let v10_1 = p.at_least(10, 1);
    let v10_2 = p.at_least(10, 2);

    s.push_str("scalar Long\n");
    s.push_str("type KeyValue { key: String! value: String }\n");
    s.push_str("enum Step { DAY HOUR MINUTE SECOND }\n");
    if p.at_least(10, 3) {
        s.push_str(
            "input Duration { start: String! end: String! step: Step! coldStage: Boolean }\n",
        );
    } else {
        s.push_str("input Duration { start: String! end: String! step: Step! }\n");
    }
    if p.at_least(9, 1) {
        s.push_str("input Pagination { pageNum: Int pageSize: Int! }\n");
    } else {
        s.push_str("input Pagination { pageNum: Int pageSize: Int! needTotal: Boolean }\n");
    }
    let scope = if v95 {
        "All Service ServiceInstance Endpoint Process ServiceRelation ServiceInstanceRelation EndpointRelation ProcessRelation"
    } else if p.at_least(9, 2) {
        "All Service ServiceInstance Endpoint ServiceRelation ServiceInstanceRelation EndpointRelation ProcessRelation"
    } else {
        "All Service ServiceInstance Endpoint ServiceRelation ServiceInstanceRelation EndpointRelation"
    };
    s.push_str(&format!("enum Scope {{ {scope} }}\n"));
    s.push_str("enum Language { UNKNOWN JAVA DOTNET NODEJS PYTHON RUBY GO LUA PHP }\n");
    s.push_str("type HealthStatus { score: Int! details: String }\n");
    s.push_str("type TimeInfo { timezone: String currentTimestamp: Long }\n");

    // Metadata.
    if p.at_least(9, 0) {
        s.push_str("type Service { id: ID! name: String! group: String! shortName: String! layers: [String!]! normal: Boolean }\n");
    } else {
        s.push_str("type Service { id: ID! name: String! group: String! }\n");
    }
    s.push_str("type Attribute { name: String! value: String! }\n");
    s.push_str("type ServiceInstance { id: ID! name: String! attributes: [Attribute!]! language: Language! instanceUUID: String! }\n");

    // Metrics v2.
    s.push_str("enum MetricsType { UNKNOWN REGULAR_VALUE LABELED_VALUE HEATMAP SAMPLED_RECORD }\n");
    let scope_ty = if p.at_least(9, 4) { "Scope" } else { "Scope!" };
    let process = if p.at_least(9, 2) {
        ("processName: String", "destProcessName: String")
    } else {
        ("", "")
    };
    s.push_str(&format!(
        "input Entity {{ scope: {scope_ty} serviceName: String normal: Boolean serviceInstanceName: String endpointName: String {} destServiceName: String destNormal: Boolean destServiceInstanceName: String destEndpointName: String {} }}\n",
        process.0, process.1
    ));
    s.push_str("input MetricsCondition { name: String! entity: Entity! }\n");
    s.push_str("type MetricDefinition { name: String! type: MetricsType! catalog: String }\n");
    s.push_str("type MetricsValues { label: String values: IntValues }\n");
    s.push_str("type IntValues { values: [KVInt!]! }\n");
    if v95 {
        s.push_str("type KVInt { id: ID! value: Long! isEmptyValue: Boolean! }\n");
        s.push_str("type NullableValue { value: Long! isEmptyValue: Boolean! }\n");
    } else {
        s.push_str("type KVInt { id: ID! value: Long! }\n");
    }

    // MQE.
    if v95 {
        s.push_str("enum ExpressionResultType { UNKNOWN SINGLE_VALUE TIME_SERIES_VALUES SORTED_LIST RECORD_LIST }\n");
        s.push_str("type Metadata { labels: [KeyValue!]! }\n");
        if v10_2 {
            s.push_str("type Owner { scope: Scope serviceID: ID serviceName: String normal: Boolean serviceInstanceID: ID serviceInstanceName: String endpointID: ID endpointName: String }\n");
            s.push_str("type MQEValue { id: ID owner: Owner value: String traceID: ID }\n");
        } else {
            s.push_str("type MQEValue { id: ID value: String traceID: ID }\n");
        }
        let meta = if p.at_least(10, 0) {
            "Metadata!"
        } else {
            "Metadata"
        };
        s.push_str(&format!(
            "type MQEValues {{ metric: {meta} values: [MQEValue!]! }}\n"
        ));
        if v10_1 {
            s.push_str("type DebuggingSpan { spanId: Int! parentSpanId: Int! operation: String! startTime: Long! endTime: Long! duration: Long! msg: String error: String }\n");
            s.push_str("type DebuggingTrace { traceId: String! condition: String! startTime: Long! endTime: Long! duration: Long! spans: [DebuggingSpan!]! }\n");
            s.push_str("type ExpressionResult { type: ExpressionResultType! results: [MQEValues!]! error: String debuggingTrace: DebuggingTrace }\n");
        } else {
            s.push_str("type ExpressionResult { type: ExpressionResultType! results: [MQEValues!]! error: String }\n");
        }
    }

    // Alarms (+ the event types AlarmMessage.events needs).
    s.push_str("enum EventType { Normal Error }\n");
    s.push_str("type Source { service: String! serviceInstance: String endpoint: String }\n");
    s.push_str("type Event { uuid: String! source: Source! name: String! type: EventType! message: String parameters: [KeyValue!] startTime: Long! endTime: Long layer: String! }\n");
    s.push_str("input AlarmTag { key: String! value: String }\n");
    let mut alarm = String::from("type AlarmMessage { startTime: Long! ");
    if p.at_least(10, 4) {
        alarm.push_str("recoveryTime: Long ");
    }
    alarm.push_str("scope: Scope id: ID! ");
    if v10_2 {
        alarm.push_str("name: String! ");
    }
    alarm.push_str("message: String! events: [Event!]! tags: [KeyValue!]! ");
    if v10_2 {
        alarm.push_str("snapshot: AlarmSnapshot! ");
    }
    alarm.push_str("}\n");
    s.push_str(&alarm);
    if v10_2 {
        s.push_str("type MQEMetric { name: String! results: [MQEValues!]! }\n");
        s.push_str("type AlarmSnapshot { expression: String! metrics: [MQEMetric!]! }\n");
    }
    if p.at_least(9, 1) {
        s.push_str("type Alarms { msgs: [AlarmMessage!]! }\n");
    } else {
        s.push_str("type Alarms { msgs: [AlarmMessage!]! total: Int! }\n");
    }
    if !v10_2 {
        s.push_str("type AlarmTrend { numOfAlarm: [Int]! }\n");
    }

    // Query root.
    s.push_str(
        "type Query {\n version: String\n checkHealth: HealthStatus!\n getTimeInfo: TimeInfo\n",
    );
    s.push_str(" typeOfMetrics(name: String!): MetricsType!\n listMetrics(regex: String): [MetricDefinition!]!\n");
    if p.at_least(9, 0) {
        s.push_str(" findService(serviceName: String!): Service\n");
        s.push_str(" listInstances(duration: Duration!, serviceId: ID!): [ServiceInstance!]!\n");
    } else {
        s.push_str(" searchService(serviceCode: String!): Service\n");
        s.push_str(
            " getServiceInstances(duration: Duration!, serviceId: ID!): [ServiceInstance!]!\n",
        );
    }
    s.push_str(" readMetricsValue(condition: MetricsCondition!, duration: Duration!): Long!\n");
    if v95 {
        s.push_str(" readNullableMetricsValue(condition: MetricsCondition!, duration: Duration!): NullableValue!\n");
    }
    s.push_str(
        " readMetricsValues(condition: MetricsCondition!, duration: Duration!): MetricsValues!\n",
    );
    s.push_str(" readLabeledMetricsValues(condition: MetricsCondition!, labels: [String!]!, duration: Duration!): [MetricsValues!]!\n");
    if v10_1 {
        s.push_str(" execExpression(expression: String!, entity: Entity!, duration: Duration!, debug: Boolean, dumpDBRsp: Boolean): ExpressionResult!\n");
    } else if v95 {
        s.push_str(" execExpression(expression: String!, entity: Entity!, duration: Duration!): ExpressionResult!\n");
    }
    s.push_str(" getAlarm(duration: Duration!, scope: Scope, keyword: String, paging: Pagination!, tags: [AlarmTag]): Alarms\n");
    if !v10_2 {
        s.push_str(" getAlarmTrend(duration: Duration!): AlarmTrend!\n");
    }
    s.push_str("}\n");
    s
}
