//! Success/failure conditions on evalexpr 11.3 (MIT; 12+ is AGPL, so the line is pinned).
//!
//! A condition is parsed once at load time. Args are *variables* (`args.min_apdex`), never
//! text spliced into the expression, so an arg value cannot change the expression's meaning.
//!
//! Numbers: every bound value and every integer literal is a FLOAT, so `/` never truncates and
//! `==` compares like with like (evalexpr's `==` is type-strict: `Int(3) != Float(3.0)`).
//!
//! NaN follows IEEE 754: `<`, `<=`, `>`, `>=`, `==` with a NaN operand are false and `!=` is
//! true. The helpers propagate NaN (`min`, `max`, `avg`, `sum`, `percentile` of a tuple holding
//! a NaN are NaN). [`crate::analysis::judge`] additionally keeps NaN inputs away from conditions
//! that do not test for NaN themselves (see there), so NaN is never "healthy" by accident.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use evalexpr::{Context, EvalexprError, EvalexprResult, Node, Operator, Value};

use super::argo_expr::{self, ArgoCondition};
use super::evidence::{CompareOp, Comparison};
use serde::{Deserialize, Serialize};

/// Errors from compiling or evaluating a condition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExprError {
    /// The expression does not parse.
    #[error("condition {src:?} does not parse as evalexpr: {message}")]
    Syntax { src: String, message: String },
    /// An expr (Argo language) condition does not compile.
    #[error("condition {src:?} is not valid expr (Argo's condition language): {source}")]
    ExprCompile {
        src: String,
        source: super::argo_expr::ArgoExprError,
    },
    /// An evalexpr compile error for a text that reads like Argo's language.
    #[error("{error}; {hint}")]
    Hinted {
        error: Box<ExprError>,
        hint: &'static str,
    },
    /// An expr (Argo language) condition failed at evaluation.
    #[error(transparent)]
    ExprEval(super::argo_expr::ArgoExprError),
    /// A `{{ ... }}` tag that is not `{{args.NAME}}`, or one inside a string literal.
    #[error("evalexpr condition {src:?}: {message}")]
    Template { src: String, message: String },
    /// A variable that is neither `result`, `args.*` nor a caller-supplied name.
    #[error("evalexpr condition {src:?} uses unknown variable {name:?}")]
    UnknownVariable { src: String, name: String },
    /// A function that is neither one of our helpers nor an allowed evalexpr builtin.
    #[error("evalexpr condition {src:?} uses unknown function {name:?}")]
    UnknownFunction { src: String, name: String },
    /// Conditions are read-only; assignments would only fail at run time.
    #[error("evalexpr condition {src:?} assigns to {name:?}; conditions cannot assign")]
    Assignment { src: String, name: String },
    /// A referenced variable has no value at evaluation time.
    #[error("variable {0:?} is not bound")]
    Unbound(String),
    /// Evaluation failed (type error, helper error, ...).
    #[error("{0}")]
    Eval(String),
    /// The condition evaluated to something other than a boolean.
    #[error("expected bool, but got {0}")]
    NotBool(String),
}

/// A measured value: one number, or the window's points (no-data points already removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResultValue {
    Scalar(f64),
    Series(Vec<f64>),
}

impl ResultValue {
    /// True when any number in the value is NaN.
    pub fn has_nan(&self) -> bool {
        match self {
            ResultValue::Scalar(v) => v.is_nan(),
            ResultValue::Series(vs) => vs.iter().any(|v| v.is_nan()),
        }
    }

    fn to_evalexpr(&self) -> Value {
        match self {
            ResultValue::Scalar(v) => Value::Float(*v),
            ResultValue::Series(vs) => Value::Tuple(vs.iter().map(|v| Value::Float(*v)).collect()),
        }
    }
}

impl fmt::Display for ResultValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResultValue::Scalar(v) => write!(f, "{}", fmt_num(*v)),
            ResultValue::Series(vs) => {
                let parts: Vec<String> = vs.iter().map(|v| fmt_num(*v)).collect();
                write!(f, "[{}]", parts.join(", "))
            }
        }
    }
}

/// Short number text: `9950` rather than `9950.0`, so messages read like the data.
pub fn fmt_num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Values a condition is evaluated against.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bindings {
    /// Bound as `result`; `None` leaves it unbound.
    pub result: Option<ResultValue>,
    /// Extra variables (raw-query aliases), bound under their own names.
    pub named: BTreeMap<String, ResultValue>,
    /// Args by their declared name; bound as `args.<name with - as _>`.
    /// A value that parses as a finite f64 becomes a Float, anything else a String.
    pub args: BTreeMap<String, String>,
    /// Raw queries: the GraphQL `data` object, bound whole as `result` in expr conditions
    /// (Argo's binding). `None` binds `result` from [`Bindings::result`].
    pub data: Option<serde_json::Value>,
}

impl Bindings {
    /// Bindings with only `result`.
    pub fn new(result: ResultValue) -> Self {
        Bindings {
            result: Some(result),
            ..Bindings::default()
        }
    }

    /// Adds args (declared names; dashes allowed).
    pub fn with_args(mut self, args: BTreeMap<String, String>) -> Self {
        self.args = args;
        self
    }

    /// Adds extra named values.
    pub fn with_named(mut self, named: BTreeMap<String, ResultValue>) -> Self {
        self.named = named;
        self
    }

    /// All variables as evalexpr values, keyed by the identifier used in conditions.
    fn variables(&self) -> HashMap<String, Value> {
        let mut vars = HashMap::new();
        if let Some(r) = &self.result {
            vars.insert(RESULT.to_string(), r.to_evalexpr());
        }
        for (k, v) in &self.named {
            vars.insert(k.clone(), v.to_evalexpr());
        }
        for (k, v) in &self.args {
            vars.insert(arg_variable(k), arg_value(v));
        }
        vars
    }

    /// Human text of one bound variable, for verdict messages.
    pub fn describe(&self, variable: &str) -> Option<String> {
        if variable == RESULT {
            return self.result.as_ref().map(|r| r.to_string());
        }
        if let Some(v) = self.named.get(variable) {
            return Some(v.to_string());
        }
        let name = variable.strip_prefix(ARGS_PREFIX)?;
        self.args
            .iter()
            .find(|(k, _)| normalize_arg_name(k) == name)
            .map(|(_, v)| match arg_value(v) {
                Value::Float(f) => fmt_num(f),
                _ => format!("{v:?}"),
            })
    }
}

const RESULT: &str = "result";
const ARGS_PREFIX: &str = "args.";

/// Our helpers; they take precedence over evalexpr builtins of the same name.
const HELPERS: &[&str] = &[
    "len",
    "min",
    "max",
    "avg",
    "sum",
    "first",
    "last",
    "percentile",
    "isNaN",
    "asFloat",
    "asInt",
    "default",
];

/// evalexpr 11.3 builtins a condition may use. `random` is left out: a verdict must be
/// reproducible from its inputs.
const BUILTINS: &[&str] = &[
    "math::ln",
    "math::log",
    "math::log2",
    "math::log10",
    "math::exp",
    "math::exp2",
    "math::pow",
    "math::cos",
    "math::acos",
    "math::cosh",
    "math::acosh",
    "math::sin",
    "math::asin",
    "math::sinh",
    "math::asinh",
    "math::tan",
    "math::atan",
    "math::tanh",
    "math::atanh",
    "math::atan2",
    "math::sqrt",
    "math::cbrt",
    "math::hypot",
    "floor",
    "round",
    "ceil",
    "math::is_nan",
    "math::is_finite",
    "math::is_infinite",
    "math::is_normal",
    "math::abs",
    "typeof",
    "if",
    "contains",
    "contains_any",
    "str::to_lowercase",
    "str::to_uppercase",
    "str::trim",
    "str::from",
    "str::substring",
];

/// `min-apdex` → `min_apdex`: evalexpr would read a dash as subtraction.
pub fn normalize_arg_name(name: &str) -> String {
    name.trim().replace('-', "_")
}

fn arg_variable(name: &str) -> String {
    format!("{ARGS_PREFIX}{}", normalize_arg_name(name))
}

fn arg_value(v: &str) -> Value {
    match v.trim().parse::<f64>() {
        Ok(f) if f.is_finite() => Value::Float(f),
        _ => Value::String(v.to_string()),
    }
}

/// A compiled evalexpr condition.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalexprCondition {
    source: String,
    expression: String,
    tree: Node,
    variables: BTreeSet<String>,
    functions: BTreeSet<String>,
    /// When the whole condition is one comparison of a measured side with a side that reads
    /// only args and literals: the operator (measured side on the left) and that side.
    comparison: Option<(CompareOp, Node)>,
}

/// The root of `tree` when it is `measured OP constant` (either order): the operator as seen
/// from the measured side and the constant side. A side is measured when it reads a variable
/// other than an arg; the other side must read none.
fn comparison_shape(tree: &Node) -> Option<(CompareOp, Node)> {
    let mut node = tree;
    while matches!(node.operator(), Operator::RootNode) && node.children().len() == 1 {
        node = &node.children()[0];
    }
    let op = match node.operator() {
        Operator::Gt => CompareOp::Gt,
        Operator::Geq => CompareOp::Ge,
        Operator::Lt => CompareOp::Lt,
        Operator::Leq => CompareOp::Le,
        Operator::Eq => CompareOp::Eq,
        Operator::Neq => CompareOp::Ne,
        _ => return None,
    };
    let [left, right] = node.children() else {
        return None;
    };
    // evalexpr's identifier iterators skip the node they start from; walk it whole.
    fn measured(n: &Node) -> bool {
        matches!(n.operator(), Operator::VariableIdentifierRead { identifier }
            if !identifier.starts_with(ARGS_PREFIX))
            || n.children().iter().any(measured)
    }
    match (measured(left), measured(right)) {
        (true, false) => Some((op, right.clone())),
        (false, true) => Some((op.mirrored(), left.clone())),
        _ => None,
    }
}

impl EvalexprCondition {
    /// Compiles a condition that may also use the given extra variable names
    /// (raw-query aliases). Unknown variables and functions are errors here, not at run time.
    pub fn compile_with_names(src: &str, names: &[&str]) -> Result<EvalexprCondition, ExprError> {
        let expression = rewrite_arg_tags(src)?;
        let mut tree =
            evalexpr::build_operator_tree(&expression).map_err(|e| ExprError::Syntax {
                src: src.to_string(),
                message: match first_bad_column(src) {
                    Some(col) if expression == src => format!("at column {col}: {e}"),
                    _ => e.to_string(),
                },
            })?;
        let empty = tree.children().is_empty();
        if let Some(message) = empty
            .then(|| "empty condition".to_string())
            .or_else(|| arity_problem(&tree))
        {
            return Err(ExprError::Syntax {
                src: src.to_string(),
                message,
            });
        }
        floatify_int_literals(&mut tree);

        if let Some(name) = tree.iter_write_variable_identifiers().next() {
            return Err(ExprError::Assignment {
                src: src.to_string(),
                name: name.to_string(),
            });
        }
        if has_assignment(&tree) {
            return Err(ExprError::Assignment {
                src: src.to_string(),
                name: String::new(),
            });
        }
        let variables: BTreeSet<String> = tree
            .iter_read_variable_identifiers()
            .map(str::to_string)
            .collect();
        for v in &variables {
            let known = v == RESULT
                || names.contains(&v.as_str())
                || v.strip_prefix(ARGS_PREFIX).is_some_and(is_arg_ident);
            if !known {
                return Err(ExprError::UnknownVariable {
                    src: src.to_string(),
                    name: v.clone(),
                });
            }
        }
        let functions: BTreeSet<String> = tree
            .iter_function_identifiers()
            .map(str::to_string)
            .collect();
        for f in &functions {
            if !HELPERS.contains(&f.as_str()) && !BUILTINS.contains(&f.as_str()) {
                return Err(ExprError::UnknownFunction {
                    src: src.to_string(),
                    name: f.clone(),
                });
            }
        }
        let comparison = comparison_shape(&tree);
        Ok(EvalexprCondition {
            source: src.to_string(),
            expression,
            tree,
            variables,
            functions,
            comparison,
        })
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text evaluated (`{{args.x}}` rewritten to `args.x`); used in messages.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Every variable identifier read, e.g. `result`, `args.min_apdex`, `service_apdex`.
    pub fn referenced_variables(&self) -> &BTreeSet<String> {
        &self.variables
    }

    /// Arg names used (normalized, without `args.`), for the caller to check against the
    /// template's declared args.
    pub fn arg_names(&self) -> BTreeSet<String> {
        self.variables
            .iter()
            .filter_map(|v| v.strip_prefix(ARGS_PREFIX))
            .map(str::to_string)
            .collect()
    }

    /// Function names used.
    pub fn functions(&self) -> &BTreeSet<String> {
        &self.functions
    }

    /// True when the condition itself handles NaN/empty values (`isNaN`, `default`,
    /// `math::is_nan`), so NaN inputs may be shown to it.
    pub fn handles_nan(&self) -> bool {
        ["isNaN", "default", "math::is_nan"]
            .iter()
            .any(|f| self.functions.contains(*f))
    }

    /// The comparison this condition is, with its constant side evaluated against the
    /// bindings' args; `None` when it is not one comparison or that side is not a finite number.
    pub fn comparison(&self, bindings: &Bindings) -> Option<Comparison> {
        let (op, constant) = self.comparison.as_ref()?;
        let ctx = EvalContext {
            vars: bindings.variables(),
        };
        let threshold = match constant.eval_with_context(&ctx).ok()? {
            Value::Float(f) => f,
            Value::Int(i) => i as f64,
            _ => return None,
        };
        threshold
            .is_finite()
            .then_some(Comparison { op: *op, threshold })
    }

    /// Evaluates to a boolean; anything else is an error.
    pub fn eval(&self, bindings: &Bindings) -> Result<bool, ExprError> {
        let ctx = EvalContext {
            vars: bindings.variables(),
        };
        for v in &self.variables {
            if !ctx.vars.contains_key(v) {
                return Err(ExprError::Unbound(v.clone()));
            }
        }
        let value = self.tree.eval_with_context(&ctx);
        if value.is_ok()
            && let Some(problem) = mixed_equality(&self.tree, &ctx)
        {
            return Err(ExprError::Eval(problem));
        }
        match value {
            Ok(Value::Boolean(b)) => Ok(b),
            Ok(other) => Err(ExprError::NotBool(describe_value(&other))),
            Err(e) => Err(ExprError::Eval(e.to_string())),
        }
    }
}

fn is_arg_ident(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// evalexpr 11 accepts incomplete trees such as `result >` and only fails when evaluating;
/// check operand counts here so such a condition is a load-time error.
fn arity_problem(node: &Node) -> Option<String> {
    use Operator::*;
    let n = node.children().len();
    let ok = match node.operator() {
        RootNode => n <= 1,
        Not | Neg | FunctionIdentifier { .. } => n == 1,
        Const { .. } | VariableIdentifierRead { .. } | VariableIdentifierWrite { .. } => n == 0,
        Tuple | Chain => n >= 1,
        _ => n == 2,
    };
    if !ok {
        return Some(format!("operator `{}` has {n} operand(s)", node.operator()));
    }
    node.children().iter().find_map(arity_problem)
}

fn has_assignment(node: &Node) -> bool {
    use Operator::*;
    matches!(
        node.operator(),
        Assign
            | AddAssign
            | SubAssign
            | MulAssign
            | DivAssign
            | ModAssign
            | ExpAssign
            | AndAssign
            | OrAssign
    ) || node.children().iter().any(has_assignment)
}

/// Integer literals become floats so `10 / 4` is 2.5 and `asInt(x) == 3` compares floats.
fn floatify_int_literals(node: &mut Node) {
    if let Operator::Const {
        value: Value::Int(i),
    } = node.operator()
    {
        let f = *i as f64;
        *node.operator_mut() = Operator::Const {
            value: Value::Float(f),
        };
    }
    for child in node.children_mut() {
        floatify_int_literals(child);
    }
}

/// evalexpr's `==` / `!=` compare values of different types without complaint (always
/// unequal), so `asFloat(result) == "1.1"` would be a silent false, i.e. a Failed measurement
/// that looks like a real regression. Finds the first such comparison. evalexpr 11 evaluates
/// every operand (no short-circuit), so re-evaluating operands here sees what `eval` saw.
fn mixed_equality(node: &Node, ctx: &EvalContext) -> Option<String> {
    if let (Operator::Eq | Operator::Neq, [a, b]) = (node.operator(), node.children()) {
        let kind = |v: &Value| match v {
            Value::Float(_) | Value::Int(_) => "number",
            Value::String(_) => "string",
            Value::Boolean(_) => "bool",
            Value::Tuple(_) => "tuple",
            Value::Empty => "empty",
        };
        if let (Ok(x), Ok(y)) = (a.eval_with_context(ctx), b.eval_with_context(ctx))
            && kind(&x) != kind(&y)
        {
            let op = if matches!(node.operator(), Operator::Eq) {
                "=="
            } else {
                "!="
            };
            return Some(format!(
                "type mismatch: {} {op} {} compares a {} with a {}; convert one side \
                 (e.g. asFloat(\"1.1\") or a number literal)",
                describe_value(&x),
                describe_value(&y),
                kind(&x),
                kind(&y)
            ));
        }
    }
    node.children().iter().find_map(|c| mixed_equality(c, ctx))
}

fn describe_value(v: &Value) -> String {
    let kind = match v {
        Value::String(_) => "string",
        Value::Float(_) => "float",
        Value::Int(_) => "int",
        Value::Boolean(_) => "bool",
        Value::Tuple(_) => "tuple",
        Value::Empty => "empty",
    };
    format!("{kind} ({v})")
}

/// Rewrites `{{args.NAME}}` / `{{ args.NAME }}` to the identifier `args.NAME_WITH_UNDERSCORES`.
/// Tags inside string literals are refused: there they would be text, and splicing text
/// is exactly what we do not do.
fn rewrite_arg_tags(src: &str) -> Result<String, ExprError> {
    let err = |message: String| ExprError::Template {
        src: src.to_string(),
        message,
    };
    let mut out = String::with_capacity(src.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = src;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if rest.starts_with("{{") {
                return Err(err(
                    "{{args.*}} inside a string literal; use the variable args.NAME instead".into(),
                ));
            }
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        if let Some(after) = rest.strip_prefix("{{") {
            let end = after
                .find("}}")
                .ok_or_else(|| err("unterminated {{ tag".into()))?;
            let tag = after[..end].trim();
            let name = tag
                .strip_prefix(ARGS_PREFIX)
                .map(str::trim)
                .filter(|n| {
                    !n.is_empty()
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                })
                .ok_or_else(|| {
                    err(format!(
                        "unsupported tag {{{{{tag}}}}}; expected {{{{args.NAME}}}}"
                    ))
                })?;
            // Keep the identifier from fusing with neighbouring identifier characters.
            let fuses =
                |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || "_.\"".contains(c));
            if fuses(out.chars().last()) {
                out.push(' ');
            }
            out.push_str(&arg_variable(name));
            rest = &after[end + 2..];
            if fuses(rest.chars().next()) {
                out.push(' ');
            }
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Ok(out.trim().to_string())
}

/// Variables from the bindings; functions are our helpers. evalexpr falls back to its
/// builtins only when `call_function` reports "not found", so a helper named like a
/// builtin (`min`, `max`, `len`) wins.
struct EvalContext {
    vars: HashMap<String, Value>,
}

impl Context for EvalContext {
    fn get_value(&self, identifier: &str) -> Option<&Value> {
        self.vars.get(identifier)
    }

    fn call_function(&self, identifier: &str, argument: &Value) -> EvalexprResult<Value> {
        match identifier {
            "len" => helper_len(argument),
            "min" => fold_numbers(identifier, argument, f64::min).map(Value::Float),
            "max" => fold_numbers(identifier, argument, f64::max).map(Value::Float),
            "sum" => fold_numbers(identifier, argument, |a, b| a + b).map(Value::Float),
            "avg" => {
                let nums = numbers(identifier, argument, true)?;
                Ok(Value::Float(nums.iter().sum::<f64>() / nums.len() as f64))
            }
            "first" => {
                let nums = numbers(identifier, argument, false)?;
                Ok(Value::Float(nums[0]))
            }
            "last" => {
                let nums = numbers(identifier, argument, false)?;
                Ok(Value::Float(nums[nums.len() - 1]))
            }
            "percentile" => helper_percentile(argument),
            "isNaN" => helper_is_nan(argument),
            "asFloat" => helper_as_float(argument),
            "asInt" => helper_as_int(argument),
            "default" => helper_default(argument),
            _ => Err(EvalexprError::FunctionIdentifierNotFound(
                identifier.to_string(),
            )),
        }
    }

    fn are_builtin_functions_disabled(&self) -> bool {
        false
    }

    fn set_builtin_functions_disabled(&mut self, disabled: bool) -> EvalexprResult<()> {
        if disabled {
            Err(EvalexprError::BuiltinFunctionsCannotBeDisabled)
        } else {
            Ok(())
        }
    }
}

fn helper_err(msg: String) -> EvalexprError {
    EvalexprError::CustomMessage(msg)
}

fn number(f: &str, v: &Value) -> EvalexprResult<f64> {
    match v {
        Value::Float(x) => Ok(*x),
        Value::Int(i) => Ok(*i as f64),
        other => Err(helper_err(format!(
            "{f}: expected a number, got {}",
            describe_value(other)
        ))),
    }
}

/// The numbers of a tuple or of a single number. `flatten` lets `max(result, 0)` see one
/// list. Empty input is an error: there is no honest min/avg/first of nothing.
fn numbers(f: &str, v: &Value, flatten: bool) -> EvalexprResult<Vec<f64>> {
    let mut out = Vec::new();
    match v {
        Value::Tuple(items) => {
            for item in items {
                match item {
                    Value::Tuple(inner) if flatten => {
                        for x in inner {
                            out.push(number(f, x)?);
                        }
                    }
                    x => out.push(number(f, x)?),
                }
            }
        }
        Value::Empty => {}
        x => out.push(number(f, x)?),
    }
    if out.is_empty() {
        return Err(helper_err(format!("{f}: empty input")));
    }
    Ok(out)
}

/// Folds with NaN propagation (`f64::min`/`max` would silently skip a NaN).
fn fold_numbers(f: &str, v: &Value, op: fn(f64, f64) -> f64) -> EvalexprResult<f64> {
    let nums = numbers(f, v, true)?;
    if nums.iter().any(|x| x.is_nan()) {
        return Ok(f64::NAN);
    }
    let mut acc = nums[0];
    for x in &nums[1..] {
        acc = op(acc, *x);
    }
    Ok(acc)
}

fn helper_len(v: &Value) -> EvalexprResult<Value> {
    let n = match v {
        Value::Tuple(items) => items.len(),
        Value::String(s) => s.chars().count(),
        Value::Empty => 0,
        Value::Float(_) | Value::Int(_) => 1,
        Value::Boolean(_) => return Err(helper_err("len: expected a tuple, got bool".into())),
    };
    Ok(Value::Float(n as f64))
}

/// Linear interpolation between closest ranks (Hyndman–Fan type 7, as Excel
/// `PERCENTILE.INC` and numpy's default): rank = p/100 · (n−1) over the sorted values.
fn helper_percentile(v: &Value) -> EvalexprResult<Value> {
    let args = v.as_fixed_len_tuple(2).map_err(|_| {
        helper_err("percentile: expected two arguments, percentile(values, p)".into())
    })?;
    let p = number("percentile", &args[1])?;
    if !(0.0..=100.0).contains(&p) {
        return Err(helper_err(format!(
            "percentile: p must be within 0..=100, got {}",
            fmt_num(p)
        )));
    }
    let mut nums = numbers("percentile", &args[0], false)?;
    if nums.iter().any(|x| x.is_nan()) {
        return Ok(Value::Float(f64::NAN));
    }
    nums.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (nums.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let (a, b) = (nums[lo], nums[hi.min(nums.len() - 1)]);
    Ok(Value::Float(a + (b - a) * (rank - lo as f64)))
}

/// Number → is it NaN; tuple → does it hold a NaN ("not healthy anywhere").
fn helper_is_nan(v: &Value) -> EvalexprResult<Value> {
    match v {
        Value::Tuple(items) => {
            let mut any = false;
            for x in items {
                any |= number("isNaN", x)?.is_nan();
            }
            Ok(Value::Boolean(any))
        }
        x => Ok(Value::Boolean(number("isNaN", x)?.is_nan())),
    }
}

fn helper_as_float(v: &Value) -> EvalexprResult<Value> {
    match v {
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| helper_err(format!("asFloat: {s:?} is not a number"))),
        x => Ok(Value::Float(number("asFloat", x)?)),
    }
}

/// Truncates toward zero; the result is a float holding an integer (see module doc on `==`).
fn helper_as_int(v: &Value) -> EvalexprResult<Value> {
    let x = match v {
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(|i| i as f64)
            .map_err(|_| helper_err(format!("asInt: {s:?} is not an integer")))?,
        x => number("asInt", x)?,
    };
    if !x.is_finite() {
        return Err(helper_err(format!("asInt: cannot convert {x} to int")));
    }
    Ok(Value::Float(x.trunc()))
}

/// `default(x, d)`: d when x itself is empty (empty tuple, empty string, nothing) or NaN.
/// Unlike Argo's, it tests its own argument, so `default(result, 0)` and
/// `default(min(result), 0)` both mean what they say.
fn helper_default(v: &Value) -> EvalexprResult<Value> {
    let args = v
        .as_fixed_len_tuple(2)
        .map_err(|_| helper_err("default: expected two arguments, default(x, d)".into()))?;
    let empty = match &args[0] {
        Value::Empty => true,
        Value::Tuple(items) => items.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Float(x) => x.is_nan(),
        Value::Int(_) | Value::Boolean(_) => false,
    };
    Ok(if empty {
        args[1].clone()
    } else {
        args[0].clone()
    })
}

pub use skycanary_api::analysis::ConditionLanguage;

/// The 1-based column of the character after which `src` stops being a valid evalexpr prefix
/// (evalexpr's errors carry no position). Cuts inside a string literal or inside a token
/// (`&|&`, `resu|lt`) are skipped, and open parentheses are closed before parsing a prefix, so
/// an error is the text's, not the cut's.
fn first_bad_column(src: &str) -> Option<usize> {
    // One parse per character: quadratic, so only for condition-sized texts.
    if src.len() > super::argo_expr::MAX_LEN {
        return None;
    }
    let op = |c: char| "&|=<>!+-*/%^".contains(c);
    let word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | ':');
    let mut in_string = false;
    let mut escaped = false;
    let mut open = 0usize;
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    for (n, (i, c)) in chars.iter().enumerate() {
        let end = i + c.len_utf8();
        if in_string {
            if escaped {
                escaped = false;
            } else if *c == '\\' {
                escaped = true;
            } else if *c == '"' {
                in_string = false;
            }
        } else if *c == '"' {
            in_string = true;
        } else if *c == '(' {
            open += 1;
        } else if *c == ')' {
            open = open.saturating_sub(1);
        }
        let next = chars.get(n + 1).map(|(_, c)| *c);
        let inside_token = next.is_some_and(|d| (op(*c) && op(d)) || (word(*c) && word(d)));
        if in_string || inside_token {
            continue;
        }
        let prefix = format!("{}{}", &src[..end], ")".repeat(open));
        if evalexpr::build_operator_tree(&prefix).is_err() {
            return Some(n + 1);
        }
    }
    None
}

/// Where an evalexpr user whose condition reads like Argo's is sent.
const ARGO_HINT: &str = "this looks like Argo's expr syntax: set `conditionLanguage: expr` on the \
    template, or rewrite it for evalexpr (README, \"Conditions\", the table of Argo conditions \
    rewritten)";

/// Marks of Argo's language that evalexpr does not have: predicates, `.field`, member access
/// on `result`, indexing, `in`, Argo's own functions.
fn looks_like_argo(src: &str) -> bool {
    // `{{args.x}}` tags are ours too.
    let mut text = src.to_string();
    while let Some(open) = text.find("{{") {
        match text[open..].find("}}") {
            Some(close) => text.replace_range(open..open + close + 2, "x"),
            None => break,
        }
    }
    [
        "{", "result.", "result[", " in ", "isNil(", "isInf(", "'", "nil", "all(", "any(",
        "filter(", "map(",
    ]
    .iter()
    .any(|m| text.contains(m))
}

/// A compiled success or failure condition, in either language.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Evalexpr(EvalexprCondition),
    Expr(ArgoCondition),
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expression())
    }
}

/// What an expr condition reads: `result` (its functions are checked at compile time).
static EXPR_VARIABLES: std::sync::LazyLock<BTreeSet<String>> =
    std::sync::LazyLock::new(|| [RESULT.to_string()].into_iter().collect());

impl Condition {
    /// Compiles an evalexpr condition that may use `result` and `args.*`.
    pub fn compile(src: &str) -> Result<Condition, ExprError> {
        Self::compile_with_names(src, &[])
    }

    /// Compiles an evalexpr condition that may also use the given raw-query aliases.
    pub fn compile_with_names(src: &str, names: &[&str]) -> Result<Condition, ExprError> {
        Self::compile_as(ConditionLanguage::Evalexpr, src, names)
    }

    /// Compiles in `language`; `names` (raw-query aliases) only exist in evalexpr, where an
    /// error on a text that reads like Argo's points at the way out.
    pub fn compile_as(
        language: ConditionLanguage,
        src: &str,
        names: &[&str],
    ) -> Result<Condition, ExprError> {
        match language {
            ConditionLanguage::Evalexpr => EvalexprCondition::compile_with_names(src, names)
                .map(Condition::Evalexpr)
                .map_err(|e| {
                    let fixable = matches!(
                        e,
                        ExprError::Syntax { .. }
                            | ExprError::UnknownVariable { .. }
                            | ExprError::UnknownFunction { .. }
                    );
                    if fixable && looks_like_argo(src) {
                        ExprError::Hinted {
                            error: Box::new(e),
                            hint: ARGO_HINT,
                        }
                    } else {
                        e
                    }
                }),
            ConditionLanguage::Expr => {
                ArgoCondition::compile(src)
                    .map(Condition::Expr)
                    .map_err(|source| ExprError::ExprCompile {
                        src: src.to_string(),
                        source,
                    })
            }
        }
    }

    /// The language it is written in.
    pub fn language(&self) -> ConditionLanguage {
        match self {
            Condition::Evalexpr(_) => ConditionLanguage::Evalexpr,
            Condition::Expr(_) => ConditionLanguage::Expr,
        }
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        match self {
            Condition::Evalexpr(c) => c.source(),
            Condition::Expr(c) => c.source(),
        }
    }

    /// The text shown in messages (evalexpr: `{{args.x}}` rewritten; expr: as written).
    pub fn expression(&self) -> &str {
        match self {
            Condition::Evalexpr(c) => c.expression(),
            Condition::Expr(c) => c.source(),
        }
    }

    /// Every variable read (expr: `result`).
    pub fn referenced_variables(&self) -> &BTreeSet<String> {
        match self {
            Condition::Evalexpr(c) => c.referenced_variables(),
            Condition::Expr(_) => &EXPR_VARIABLES,
        }
    }

    /// Arg names used (evalexpr: normalized; expr: as declared).
    pub fn arg_names(&self) -> BTreeSet<String> {
        match self {
            Condition::Evalexpr(c) => c.arg_names(),
            Condition::Expr(c) => c.arg_names().clone(),
        }
    }

    /// Function names used.
    pub fn functions(&self) -> &BTreeSet<String> {
        match self {
            Condition::Evalexpr(c) => c.functions(),
            Condition::Expr(c) => c.functions(),
        }
    }

    /// True when the condition itself handles NaN/empty values.
    pub fn handles_nan(&self) -> bool {
        match self {
            Condition::Evalexpr(c) => c.handles_nan(),
            Condition::Expr(c) => ["isNaN", "isNil", "default"]
                .iter()
                .any(|f| c.functions().contains(*f)),
        }
    }

    /// The comparison `measured OP threshold` this condition is, read from the compiled
    /// expression (either order of operands), with the threshold evaluated against the args;
    /// `None` for anything else (`&&`, arithmetic on both sides, a non-numeric arg, ...).
    pub fn comparison(&self, bindings: &Bindings) -> Option<Comparison> {
        match self {
            Condition::Evalexpr(c) => c.comparison(bindings),
            Condition::Expr(c) => c.comparison(&bindings.args),
        }
    }

    /// Evaluates to a boolean; anything else is an error. expr binds `result` as Argo does:
    /// the raw query's `data` object when there is one, else the value (a number or an array).
    pub fn eval(&self, bindings: &Bindings) -> Result<bool, ExprError> {
        match self {
            Condition::Evalexpr(c) => c.eval(bindings),
            Condition::Expr(c) => {
                let result = match (&bindings.data, &bindings.result) {
                    (Some(d), _) => argo_expr::json_to_value(d),
                    (None, Some(ResultValue::Scalar(v))) => ::expr::Value::Float(*v),
                    (None, Some(ResultValue::Series(vs))) => {
                        ::expr::Value::Array(vs.iter().map(|v| ::expr::Value::Float(*v)).collect())
                    }
                    (None, None) => return Err(ExprError::Unbound(RESULT.into())),
                };
                c.eval(&result, &bindings.args).map_err(ExprError::ExprEval)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(vs: &[f64]) -> Bindings {
        Bindings::new(ResultValue::Series(vs.to_vec()))
    }

    fn scalar(v: f64) -> Bindings {
        Bindings::new(ResultValue::Scalar(v))
    }

    fn eval(src: &str, b: &Bindings) -> Result<bool, ExprError> {
        Condition::compile(src)?.eval(b)
    }

    fn yes(src: &str, b: &Bindings) {
        assert_eq!(eval(src, b), Ok(true), "{src}");
    }

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn min_result_against_numeric_arg() {
        let b = series(&[9950.0, 9930.0, 9910.0]).with_args(args(&[("min-apdex", "9900")]));
        yes("min(result) >= args.min_apdex", &b);
        yes("min(result) >= {{args.min-apdex}}", &b);
        yes("min(result) >= {{ args.min_apdex }}", &b);
        let low = series(&[9950.0, 9800.0]).with_args(args(&[("min-apdex", "9900")]));
        assert_eq!(eval("min(result) >= args.min_apdex", &low), Ok(false));
    }

    #[test]
    fn division_never_truncates() {
        yes("result / 3 > 3.33 && result / 3 < 3.34", &scalar(10.0));
        // Literals are floats too.
        yes("10 / 4 == 2.5", &scalar(0.0));
    }

    #[test]
    fn helpers_beat_builtins() {
        // evalexpr's builtin `min` of a one-element tuple argument would differ; ours folds.
        yes("min(result) == 1", &series(&[3.0, 1.0, 2.0]));
        yes("max(result) == 3", &series(&[3.0, 1.0, 2.0]));
        yes("max(result, 7) == 7", &series(&[3.0, 1.0]));
        // builtin len of a Float errors; ours says 1.
        yes("len(result) == 1", &scalar(5.0));
        yes("len(result) == 3", &series(&[1.0, 2.0, 3.0]));
        yes("len(result) == 0", &series(&[]));
    }

    #[test]
    fn aggregate_helpers() {
        let b = series(&[1.0, 2.0, 3.0, 4.0]);
        yes("sum(result) == 10", &b);
        yes("avg(result) == 2.5", &b);
        yes("first(result) == 1", &b);
        yes("last(result) == 4", &b);
        yes(
            "avg(result) == 7 && first(result) == 7 && last(result) == 7",
            &scalar(7.0),
        );
        yes("sum(1, 2) == 3", &b);
    }

    #[test]
    fn empty_tuple_is_an_error_for_aggregates() {
        for f in ["min", "max", "avg", "sum", "first", "last"] {
            let e = eval(&format!("{f}(result) > 0"), &series(&[]));
            assert!(
                matches!(e, Err(ExprError::Eval(ref m)) if m.contains("empty")),
                "{f}: {e:?}"
            );
        }
        assert!(eval("percentile(result, 50) > 0", &series(&[])).is_err());
    }

    #[test]
    fn percentile_interpolates_linearly_between_closest_ranks() {
        let b = series(&[40.0, 10.0, 30.0, 20.0]);
        yes("percentile(result, 0) == 10", &b);
        yes("percentile(result, 100) == 40", &b);
        yes("percentile(result, 50) == 25", &b);
        // rank = 0.9 * 3 = 2.7 → 30 + 0.7 * 10
        yes(
            "percentile(result, 90) > 36.99 && percentile(result, 90) < 37.01",
            &b,
        );
        yes("percentile(result, 99) == 5", &scalar(5.0));
        assert!(eval("percentile(result, 101) > 0", &b).is_err());
        assert!(eval("percentile(result, -1) > 0", &b).is_err());
    }

    #[test]
    fn is_nan_helper() {
        yes("isNaN(result)", &scalar(f64::NAN));
        yes("!isNaN(result)", &scalar(1.0));
        yes("isNaN(result)", &series(&[1.0, f64::NAN]));
        yes("!isNaN(result)", &series(&[1.0]));
        assert!(eval("isNaN(\"x\")", &scalar(1.0)).is_err());
    }

    #[test]
    fn as_float_and_as_int() {
        let b = scalar(0.0).with_args(args(&[("name", "reviews"), ("n", "42")]));
        yes("asFloat(\"1.5\") == 1.5", &b);
        yes("asFloat(2) == 2", &b);
        yes("asFloat(args.n) == 42", &b);
        yes("asInt(1.9) == 1", &b);
        yes("asInt(-1.9) == -1", &b);
        yes("asInt(\"7\") == 7", &b);
        assert!(eval("asInt(\"1.1\") == 1", &b).is_err());
        assert!(eval("asFloat(args.name) == 1", &b).is_err());
        assert!(eval("asInt(result) == 0", &scalar(f64::NAN)).is_err());
    }

    #[test]
    fn default_tests_its_own_argument() {
        yes("default(result, 0) == 0", &series(&[]));
        yes("default(result, 0) == 0", &scalar(f64::NAN));
        yes("default(result, 0) == 5", &scalar(5.0));
        yes("min(default(result, 9999)) == 9999", &series(&[]));
        yes("default(\"\", \"x\") == \"x\"", &scalar(1.0));
        // Argo's default would return the whole result here; ours tests sum(result).
        yes("default(sum(result), 1) == 3", &series(&[1.0, 2.0]));
    }

    #[test]
    fn nan_comparisons_follow_ieee() {
        let nan = scalar(f64::NAN);
        for src in [
            "result > 0",
            "result < 0",
            "result >= 0",
            "result <= 0",
            "result == result",
        ] {
            assert_eq!(eval(src, &nan), Ok(false), "{src}");
        }
        yes("result != 0", &nan);
        yes("isNaN(min(result))", &series(&[1.0, f64::NAN]));
        yes("isNaN(max(result))", &series(&[f64::NAN, 1.0]));
        yes("isNaN(avg(result))", &series(&[f64::NAN, 1.0]));
        yes("isNaN(percentile(result, 50))", &series(&[f64::NAN, 1.0]));
    }

    #[test]
    fn unknown_variable_is_a_compile_error() {
        assert!(matches!(
            Condition::compile("reslt > 1"),
            Err(ExprError::UnknownVariable { ref name, .. }) if name == "reslt"
        ));
        assert!(Condition::compile("service_apdex > 1").is_err());
        let c = Condition::compile_with_names("service_apdex > result", &["service_apdex"]);
        let c = c.expect("alias is known");
        let b = scalar(1.0).with_named(
            [("service_apdex".to_string(), ResultValue::Scalar(2.0))]
                .into_iter()
                .collect(),
        );
        assert_eq!(c.eval(&b), Ok(true));
    }

    #[test]
    fn unknown_function_is_a_compile_error() {
        assert!(matches!(
            Condition::compile("mean(result) > 1"),
            Err(ExprError::UnknownFunction { ref name, .. }) if name == "mean"
        ));
        assert!(Condition::compile("random() > 0.5").is_err());
        assert!(Condition::compile("math::sqrt(result) > 1").is_ok());
    }

    #[test]
    fn syntax_and_assignment_errors() {
        assert!(matches!(
            Condition::compile("result >"),
            Err(ExprError::Syntax { .. })
        ));
        for src in ["", "result > ", "!", "1 +", "min(result) >= 2 &&"] {
            assert!(Condition::compile(src).is_err(), "{src:?}");
        }
        assert!(Condition::compile("min(()) > 0").is_ok());
        assert!(Condition::compile("-result < 1 && !(result > 2)").is_ok());
        assert!(matches!(
            Condition::compile("result = 1"),
            Err(ExprError::Assignment { .. })
        ));
    }

    #[test]
    fn non_bool_result_is_an_error() {
        let e = eval("result + 1", &scalar(1.0));
        assert!(matches!(e, Err(ExprError::NotBool(_))));
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.starts_with("expected bool, but got float"), "{msg}");
    }

    #[test]
    fn args_are_variables_not_text() {
        // A value that looks like code stays a string.
        let b = scalar(1.0).with_args(args(&[("x", "1 || true")]));
        assert!(eval("result > {{args.x}}", &b).is_err());
        yes("args.x == \"1 || true\"", &b);
        // Non-finite strings are strings, not floats.
        let b = scalar(1.0).with_args(args(&[("x", "NaN")]));
        yes("args.x == \"NaN\"", &b);
    }

    #[test]
    fn arg_tags_are_rewritten_and_reported() {
        let c = Condition::compile("result >= {{ args.min-apdex }} && result < {{args.max}}");
        let c = c.expect("compiles");
        assert_eq!(
            c.expression(),
            "result >= args.min_apdex && result < args.max"
        );
        let names: Vec<String> = c.arg_names().into_iter().collect();
        assert_eq!(names, vec!["max".to_string(), "min_apdex".to_string()]);
        assert!(matches!(
            Condition::compile("result == \"{{args.x}}\""),
            Err(ExprError::Template { .. })
        ));
        assert!(Condition::compile("result > {{secrets.x}}").is_err());
        assert!(Condition::compile("result > {{args.x").is_err());
    }

    #[test]
    fn unbound_variable_is_an_eval_error() {
        let c = Condition::compile("result > args.missing").expect("compiles");
        assert_eq!(
            c.eval(&scalar(1.0)),
            Err(ExprError::Unbound("args.missing".into()))
        );
    }

    #[test]
    fn evalexpr_errors_on_argo_text_point_to_the_way_out() {
        for src in [
            "all(result.service_apdex.values.values, {asFloat(.value) >= 9900})",
            "result[0] >= 0.95",
            "2 in result",
            "isNil(result)",
        ] {
            let msg = Condition::compile(src).expect_err(src).to_string();
            assert!(msg.contains("conditionLanguage: expr"), "{src}: {msg}");
            assert!(msg.contains("README"), "{src}: {msg}");
        }
        let msg = Condition::compile("result >").expect_err("bad").to_string();
        assert!(msg.contains("does not parse as evalexpr"), "{msg}");
        // evalexpr's own errors have no position; ours do.
        let msg = Condition::compile("min(result) >= 2 2 && true")
            .expect_err("bad")
            .to_string();
        assert!(msg.contains("at column 18: "), "{msg}");
        let msg = Condition::compile("(result > 1)) && true")
            .expect_err("bad")
            .to_string();
        assert!(msg.contains("at column 13: "), "{msg}");
        assert!(!msg.contains("conditionLanguage"), "{msg}");
    }

    #[test]
    fn language_is_chosen_per_condition() {
        let src = "all(result, {# >= 9900})";
        let c = Condition::compile_as(ConditionLanguage::Expr, src, &[]).expect("expr");
        assert_eq!(c.language(), ConditionLanguage::Expr);
        assert_eq!(c.eval(&series(&[9950.0, 9900.0])), Ok(true));
        assert_eq!(c.eval(&series(&[9950.0, 9800.0])), Ok(false));
        // A raw query's data is `result` itself.
        let mut b = series(&[1.0]);
        b.data = Some(serde_json::json!({"a": {"values": [9950]}}));
        let c = Condition::compile_as(
            ConditionLanguage::Expr,
            "all(result.a.values, {# > 9900})",
            &[],
        )
        .expect("expr");
        assert_eq!(c.eval(&b), Ok(true));
        let msg = Condition::compile_as(ConditionLanguage::Expr, "min(result) >=", &[])
            .expect_err("bad")
            .to_string();
        assert!(
            msg.contains("is not valid expr (Argo's condition language)"),
            "{msg}"
        );
        assert!(
            Condition::compile_as(ConditionLanguage::Evalexpr, "min(result) >= 1", &[]).is_ok()
        );
    }

    #[test]
    fn describe_formats_values() {
        let b = series(&[9950.0, 9930.5]).with_args(args(&[("min-apdex", "9900"), ("s", "a")]));
        assert_eq!(b.describe("result").as_deref(), Some("[9950, 9930.5]"));
        assert_eq!(b.describe("args.min_apdex").as_deref(), Some("9900"));
        assert_eq!(b.describe("args.s").as_deref(), Some("\"a\""));
    }

    #[test]
    fn number_compared_with_string_is_an_error_not_false() {
        for src in [
            "asFloat(result) == \"1.1\"",
            "result != \"1.1\"",
            "\"9900\" == min(result)",
            "result > 0 && (result == \"x\" || true)",
        ] {
            let e = eval(src, &scalar(1.1)).expect_err(src);
            assert!(
                e.to_string().contains("compares a number with a string")
                    || e.to_string().contains("compares a string with a number"),
                "{src}: {e}"
            );
        }
        let e = eval(
            "args.env == 1",
            &scalar(1.0).with_args(args(&[("env", "prod")])),
        )
        .expect_err("string arg vs number");
        assert!(
            e.to_string().contains("compares a string with a number"),
            "{e}"
        );
        // Same types still compare, including the fix the message suggests.
        yes("asFloat(result) == 1.1", &scalar(1.1));
        yes("asFloat(result) == asFloat(\"1.1\")", &scalar(1.1));
        yes(
            "args.env == \"prod\"",
            &scalar(0.0).with_args(args(&[("env", "prod")])),
        );
        yes(
            "args.env != \"dev\"",
            &scalar(0.0).with_args(args(&[("env", "prod")])),
        );
    }

    /// The threshold of a condition, read from its compiled form: the operator as seen from
    /// the measured side and the constant side's value, or `None` when the condition is not
    /// one comparison of the measured value with a constant or arg.
    #[test]
    fn thresholds_come_from_the_compiled_condition() {
        use super::CompareOp::*;
        use ConditionLanguage::{Evalexpr, Expr};
        let a = args(&[("x", "9500"), ("min-apdex", "9900"), ("name", "abc")]);
        let b = scalar(1.0).with_args(a.clone());
        type Case<'a> = (ConditionLanguage, &'a str, Option<(CompareOp, f64)>);
        let table: &[Case<'_>] = &[
            (Evalexpr, "result >= 0.9", Some((Ge, 0.9))),
            (Evalexpr, "first(result) >= 0.95", Some((Ge, 0.95))),
            (Evalexpr, "min(result) < args.x", Some((Lt, 9500.0))),
            (
                Evalexpr,
                "min(result) >= {{args.min-apdex}}",
                Some((Ge, 9900.0)),
            ),
            (Evalexpr, "0.9 <= result", Some((Ge, 0.9))),
            (Evalexpr, "args.x > max(result)", Some((Lt, 9500.0))),
            (Evalexpr, "(result >= 0.9)", Some((Ge, 0.9))),
            (Evalexpr, "result > -5", Some((Gt, -5.0))),
            (Evalexpr, "result >= 10 / 4", Some((Ge, 2.5))),
            (Evalexpr, "avg(result) * 100 != args.x", Some((Ne, 9500.0))),
            (
                Evalexpr,
                "len(\"a with b; c → true\") < result",
                Some((Gt, 18.0)),
            ),
            (Evalexpr, "result > 5 && result < 10", None),
            (Evalexpr, "isNaN(result) || result >= 0.95", None),
            (Evalexpr, "result + 1 > result", None),
            (Evalexpr, "1 < 2", None),
            (Evalexpr, "args.name == str::from(result)", None),
            (Evalexpr, "min(result)", None),
            (Expr, "result[0] > 100", Some((Gt, 100.0))),
            (Expr, "100 < result[0]", Some((Gt, 100.0))),
            (Expr, "result[0] >= {{args.min-apdex}}", Some((Ge, 9900.0))),
            (Expr, "{{args.x}} >= mean(result)", Some((Le, 9500.0))),
            (
                Expr,
                "mean(result) >= asFloat(\"{{args.x}}\")",
                Some((Ge, 9500.0)),
            ),
            (Expr, "result[0] <= 0.5 * 2", Some((Le, 1.0))),
            (
                Expr,
                "len(\"a with b; c → true\") == len(result)",
                Some((Eq, 18.0)),
            ),
            (Expr, "result[0] > 1 and result[0] < 5", None),
            (Expr, "result[0] > 1 && result[0] < 5", None),
            (Expr, "not (result[0] > 5)", None),
            (Expr, "all(result, {# > 5})", None),
            (Expr, "len(result) in [1, 2]", None),
            (Expr, "result[0] > 1 ? true : false", None),
            (Expr, "result[0] == \"up\"", None),
            (Expr, "result[0] >= {{args.name}}", None),
            (Expr, "result[0] > result[1]", None),
        ];
        for (language, src, want) in table {
            let c = Condition::compile_as(*language, src, &[]).expect(src);
            let got = c.comparison(&b).map(|x| (x.op, x.threshold));
            assert_eq!(got, *want, "{language}: {src}");
        }
    }
}
