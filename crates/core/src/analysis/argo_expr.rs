//! Conditions in Argo Rollouts' own language (expr), for `argoproj.io/v1alpha1` templates, so
//! an Argo template's conditions run unchanged.
//!
//! The parser and evaluator are the `expr-lang` crate; this module adds what Argo adds on top
//! (its functions and bindings, `utils/evaluate/evaluate.go`) and closes the gaps between the
//! crate and Go's expr with a small source normalisation done before parsing:
//! - `.field` inside a predicate (`{asFloat(.value) >= 9900}`) is Go expr's shorthand for
//!   `#.field`; the crate parses only the latter, so the dot gets its `#`.
//! - `{{args.name}}` is an *arg*, bound as a variable (`$args["name"]`), never spliced as text;
//!   inside a string literal the literal becomes a concatenation with the arg's text.
//! - Go's type checker refuses `asFloat(result) == "1.1"` (`mismatched types float64 and
//!   string`); the crate would silently answer false. Comparisons whose two operands have a
//!   type known from the text (literals, Argo's and expr's numeric functions) are checked here;
//!   a `result` path (`result.a[0].b`) compared with a literal is checked against the data at
//!   evaluation, so a number compared with a string there is an Error as well. Any other
//!   `==`/`!=` (a computed operand: `result.a + 1 == "2"`) runs through `$eq`/`$ne`, which
//!   check the two values' types first, so no mismatch is ever a silent false. The ordering
//!   operators need no help: the crate refuses mixed operands there, as Go's expr does.
//!
//! Bounded work: before the (recursive) parser sees it, the text is checked to be at most
//! [`MAX_LEN`] bytes with at most [`MAX_OPERATORS`] operators, [`MAX_DEPTH`] nested brackets and
//! [`MAX_PREDICATE_DEPTH`] nested predicates; `let`, ranges (`1..n`), `reduce` and `repeat`,
//! the constructs that can build values exponentially or without bound from a short text, are
//! refused.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::LazyLock;

use expr::{Context, Environment, Program, Value};

use super::evidence::{CompareOp, Comparison};

/// Longest accepted condition, in bytes. Argo's documented conditions are under 200.
pub const MAX_LEN: usize = 1024;
/// Deepest accepted bracket nesting (`(`, `[`, `{` together).
pub const MAX_DEPTH: usize = 16;
/// Deepest accepted predicate (`{...}`) nesting: evaluation work grows with data size to this
/// power.
pub const MAX_PREDICATE_DEPTH: usize = 3;
/// Most operators (infix, prefix, postfix `.x`, `[i]`, calls) in one condition. The parser
/// and the evaluator recurse once per operator of a chain (`a.b.c…`, `1+1+…`, `2^2^…`), so
/// this bounds their stack use; Argo's documented conditions use fewer than 10.
pub const MAX_OPERATORS: usize = 64;

/// Errors of compiling or evaluating an expr condition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArgoExprError {
    /// Longer than [`MAX_LEN`].
    #[error("the condition is {len} bytes long; the limit is {MAX_LEN}")]
    TooLong { len: usize },
    /// More operators than [`MAX_OPERATORS`].
    #[error("the condition has more than {MAX_OPERATORS} operators")]
    TooManyOperators,
    /// Brackets nested deeper than allowed.
    #[error("brackets nest deeper than {limit} at column {column}")]
    TooDeep { limit: usize, column: usize },
    /// The text does not parse.
    #[error("syntax error at line {line}, column {column}: {message}\n    {excerpt}\n    {caret}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
        excerpt: String,
        caret: String,
    },
    /// A construct refused because its work is unbounded.
    #[error("{what} at column {column} is not supported in conditions: {why}")]
    Unsupported {
        what: String,
        column: usize,
        why: &'static str,
    },
    /// A `{{ ... }}` tag that is not `{{args.NAME}}`.
    #[error("column {column}: {message}")]
    Template { column: usize, message: String },
    /// A name that is neither `result` nor a field inside a predicate (Argo: same wording).
    #[error("unknown name {0}")]
    UnknownName(String),
    /// A function neither Argo nor expr has (or one this build leaves out).
    #[error("unknown func {0}")]
    UnknownFunction(String),
    /// Two operands of different types compared (Argo: same wording).
    #[error("invalid operation: {op} (mismatched types {left} and {right})")]
    Mismatch {
        op: String,
        left: &'static str,
        right: &'static str,
    },
    /// Evaluation failed (type error, bad argument, missing field, ...).
    #[error("{0}")]
    Eval(String),
    /// The condition evaluated to something other than a boolean (Argo: same wording).
    #[error("expected bool, but got {0}")]
    NotBool(&'static str),
}

/// A compiled expr condition.
#[derive(Debug, Clone)]
pub struct ArgoCondition {
    source: String,
    normalized: String,
    program: Program,
    functions: BTreeSet<String>,
    arg_names: BTreeSet<String>,
    /// `result` paths compared with a literal of a known type, checked at evaluation.
    checks: Vec<PathCheck>,
    /// When the whole condition is one comparison of a side reading `result` with a side
    /// that does not: the operator (measured side on the left) and the other side, compiled.
    comparison: Option<(CompareOp, Program)>,
}

impl PartialEq for ArgoCondition {
    /// Same text, same program.
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// A comparison of a `result` path with an operand of known type.
#[derive(Debug, Clone, PartialEq)]
struct PathCheck {
    op: String,
    /// Path segments below `result`.
    path: Vec<Segment>,
    /// The other operand's type.
    other: Kind,
    /// True when the path is the left operand.
    path_left: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(i64),
    /// Every element of an array: the `#` of a predicate over it.
    Each,
}

/// What the text tells about an operand's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    Str,
    Bool,
}

impl Kind {
    /// Go's name, as Argo's messages use it.
    fn go_name(self) -> &'static str {
        match self {
            Kind::Int => "int",
            Kind::Float => "float64",
            Kind::Str => "string",
            Kind::Bool => "bool",
        }
    }

    fn class(self) -> u8 {
        match self {
            Kind::Int | Kind::Float => 0,
            Kind::Str => 1,
            Kind::Bool => 2,
        }
    }

    fn of_value(v: &Value) -> Option<Kind> {
        match v {
            Value::Integer(_) => Some(Kind::Int),
            Value::Float(_) => Some(Kind::Float),
            Value::String(_) => Some(Kind::Str),
            Value::Bool(_) => Some(Kind::Bool),
            _ => None,
        }
    }
}

/// Argo's functions (`asInt`, `asFloat`, `isNaN`, `isInf`, `isNil`, `default`) and expr's
/// builtins this build offers. `reduce` and `repeat` are left out (unbounded work).
#[rustfmt::skip]
const FUNCTIONS: &[&str] = &[
    // Argo's.
    "asInt", "asFloat", "isNaN", "isInf", "isNil", "default",
    // Predicates.
    "all", "any", "one", "none", "map", "filter", "find", "findIndex", "findLast",
    "findLastIndex", "count", "groupBy", "sortBy",
    // Numbers and arrays.
    "sum", "mean", "median", "max", "min", "abs", "ceil", "floor", "round", "len", "first",
    "last", "take", "reverse", "uniq", "concat", "flatten", "sort", "keys", "values", "toPairs",
    "fromPairs", "join", "get", "type", "int", "float", "string",
    // Strings.
    "trim", "trimPrefix", "trimSuffix", "upper", "lower", "split", "splitAfter", "replace",
    "indexOf", "lastIndexOf", "hasPrefix", "hasSuffix",
];

/// Functions whose result type does not depend on their input (for the text type check).
fn function_kind(name: &str) -> Option<Kind> {
    match name {
        "asInt" | "len" | "count" | "int" | "indexOf" | "lastIndexOf" | "findIndex"
        | "findLastIndex" => Some(Kind::Int),
        "asFloat" | "float" | "mean" | "median" => Some(Kind::Float),
        "isNaN" | "isInf" | "isNil" | "all" | "any" | "one" | "none" | "hasPrefix"
        | "hasSuffix" => Some(Kind::Bool),
        "string" | "upper" | "lower" | "trim" | "trimPrefix" | "trimSuffix" | "join"
        | "replace" | "type" => Some(Kind::Str),
        _ => None,
    }
}

/// Words that are operators (they never end an operand).
const OPERATOR_WORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "if",
    "else",
];

/// Words that are literals.
const LITERAL_WORDS: &[&str] = &["true", "false", "nil"];

/// Operators and literals: words that are not names.
fn is_keyword(w: &str) -> bool {
    OPERATOR_WORDS.contains(&w) || LITERAL_WORDS.contains(&w)
}

/// Bound name of the args map (`{{args.x}}` → `$args["x"]`).
const ARGS_VAR: &str = "$args";
/// Bound name of the args' text (`"a{{args.x}}"` → `("a" + $argtext["x"])`).
const ARGTEXT_VAR: &str = "$argtext";

impl ArgoCondition {
    /// Normalises, checks and parses `src`.
    pub fn compile(src: &str) -> Result<ArgoCondition, ArgoExprError> {
        if src.len() > MAX_LEN {
            return Err(ArgoExprError::TooLong { len: src.len() });
        }
        let n = normalize(src)?;
        // Parse the text as normalised first, so a syntax error points into the source.
        expr::compile(&n.text).map_err(|e| syntax_error(src, &n, e))?;
        let guarded = guard_equality(&n.text)?;
        let program = expr::compile(&guarded).map_err(|e| {
            ArgoExprError::Eval(format!(
                "the condition parses, but not once its comparisons are type-checked \
                 ({guarded}): {e}"
            ))
        })?;
        let comparison = comparison_shape(&n.text);
        Ok(ArgoCondition {
            source: src.to_string(),
            normalized: n.text,
            program,
            functions: n.functions,
            arg_names: n.arg_names,
            checks: n.checks,
            comparison,
        })
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text handed to the parser (after normalisation).
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// Functions called.
    pub fn functions(&self) -> &BTreeSet<String> {
        &self.functions
    }

    /// Args referenced (`{{args.NAME}}`), by their declared name.
    pub fn arg_names(&self) -> &BTreeSet<String> {
        &self.arg_names
    }

    /// Evaluates against `result` (already converted, see [`json_to_value`]) and the args.
    pub fn eval(
        &self,
        result: &Value,
        args: &BTreeMap<String, String>,
    ) -> Result<bool, ArgoExprError> {
        let mut found = Vec::new();
        for c in &self.checks {
            found.clear();
            resolve(result, &c.path, &mut found);
            if let Some(kind) = found
                .iter()
                .filter_map(|v| Kind::of_value(v))
                .find(|k| k.class() != c.other.class())
            {
                let (left, right) = if c.path_left {
                    (kind, c.other)
                } else {
                    (c.other, kind)
                };
                return Err(ArgoExprError::Mismatch {
                    op: c.op.clone(),
                    left: left.go_name(),
                    right: right.go_name(),
                });
            }
        }
        let mut ctx = args_context(args);
        ctx.insert("result", result.clone());
        for a in &self.arg_names {
            if !args.contains_key(a) {
                return Err(ArgoExprError::Eval(format!("args.{a} is not bound")));
            }
        }
        match ENV.run(&self.program, &ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(ArgoExprError::NotBool(go_type(&other))),
            Err(e) => Err(ArgoExprError::Eval(e.to_string())),
        }
    }
}

impl ArgoCondition {
    /// The comparison this condition is, with its constant side evaluated against `args`;
    /// `None` when it is not one comparison of `result` with a constant or an arg, or that
    /// side is not a finite number.
    pub fn comparison(&self, args: &BTreeMap<String, String>) -> Option<Comparison> {
        let (op, constant) = self.comparison.as_ref()?;
        let threshold = match ENV.run(constant, &args_context(args)).ok()? {
            Value::Integer(i) => i as f64,
            Value::Float(f) => f,
            _ => return None,
        };
        threshold
            .is_finite()
            .then_some(Comparison { op: *op, threshold })
    }
}

/// The args bound as a condition sees them: typed (`{{args.x}}`) and as text (inside strings).
fn args_context(args: &BTreeMap<String, String>) -> Context {
    let mut ctx = Context::default();
    let typed = args.iter().map(|(k, v)| (k.clone(), arg_value(v)));
    let text = args
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())));
    ctx.insert(ARGS_VAR, Value::Map(typed.collect()));
    ctx.insert(ARGTEXT_VAR, Value::Map(text.collect()));
    ctx
}

/// Words that bind as loosely as a comparison or looser, or change its meaning: with one of
/// them outside brackets a comparison is not the whole condition.
const NOT_SIMPLE_WORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "if",
    "else",
    "let",
];

/// The normalised condition as `measured OP constant` (either order), from its tokens as the
/// crate's grammar binds them: exactly one comparison outside brackets and nothing that binds
/// as loosely (`&&`, `||`, the ternary, `??`, the pipe, `in`, `matches`, ...) or negates it.
/// The measured side reads `result`; the constant side reads neither `result` nor a predicate
/// element (`#`), and it is compiled on its own so evaluating it sees what the condition sees.
fn comparison_shape(text: &str) -> Option<(CompareOp, Program)> {
    let toks = tokenize(text).ok()?;
    let mut depth = 0usize;
    let mut at = None;
    let mut comparisons = 0usize;
    for (j, (_, _, tok)) in toks.iter().enumerate() {
        match tok {
            Tok::Punct(p) if matches!(p.as_str(), "(" | "[" | "{") => depth += 1,
            Tok::Punct(p) if matches!(p.as_str(), ")" | "]" | "}") => {
                depth = depth.checked_sub(1)?;
            }
            _ if depth > 0 => {}
            Tok::Punct(p) => match p.as_str() {
                "<" | "<=" | ">" | ">=" | "==" | "!=" => {
                    comparisons += 1;
                    at = Some(j);
                }
                "&&" | "||" | "?" | "??" | ":" | "," | ";" | "|" | ".." | "!" => return None,
                _ => {}
            },
            Tok::Ident(_) if word_at(&toks, j, NOT_SIMPLE_WORDS) => return None,
            _ => {}
        }
    }
    let k = at.filter(|_| comparisons == 1)?;
    let op = match &toks[k].2 {
        Tok::Punct(p) => match p.as_str() {
            "<" => CompareOp::Lt,
            "<=" => CompareOp::Le,
            ">" => CompareOp::Gt,
            ">=" => CompareOp::Ge,
            "==" => CompareOp::Eq,
            _ => CompareOp::Ne,
        },
        _ => return None,
    };
    // A name (not a member after `.`/`?.`) among tokens `range`.
    let names = |range: std::ops::Range<usize>, want: &dyn Fn(&str) -> bool| {
        range.into_iter().any(|j| match &toks[j].2 {
            Tok::Ident(w) => {
                let member = j
                    .checked_sub(1)
                    .is_some_and(|p| matches!(&toks[p].2, Tok::Punct(d) if d == "." || d == "?."));
                !member && want(w)
            }
            _ => false,
        })
    };
    let reads_result = |r: std::ops::Range<usize>| names(r, &|w| w == "result");
    let is_constant = |r: std::ops::Range<usize>| {
        !r.is_empty()
            && !names(r.clone(), &|w| w == "result" || w.starts_with('#'))
            && !r
                .into_iter()
                .any(|j| matches!(&toks[j].2, Tok::Punct(p) if p == "{"))
    };
    let (left, right) = (0..k, k + 1..toks.len());
    let (op, constant) = if reads_result(left.clone()) && is_constant(right.clone()) {
        (op, &text[toks[k].1..])
    } else if reads_result(right) && is_constant(left) {
        (op.mirrored(), &text[..toks[k].0])
    } else {
        return None;
    };
    Some((op, expr::compile(constant.trim()).ok()?))
}

/// An arg's value as Argo's text splicing would read it: a number when it is one, else a string.
fn arg_value(v: &str) -> Value {
    let t = v.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Value::Integer(i);
    }
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() => Value::Float(f),
        _ => Value::String(v.to_string()),
    }
}

/// Go's `%T` of a decoded JSON value, as in Argo's `expected bool, but got float64`.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "int",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::Bool(_) => "bool",
        Value::Nil => "<nil>",
        Value::Array(_) | Value::Bytes(_) => "[]interface {}",
        Value::Map(_) | Value::KeyedMap(_) => "map[string]interface {}",
    }
}

/// A JSON value as Argo binds it: Go's JSON decoding makes every number a float64.
pub fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(json_to_value).collect()),
        serde_json::Value::Object(m) => Value::Map(
            m.iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        ),
    }
}

/// Every value at `path` below `v` (several through [`Segment::Each`]).
fn resolve<'a>(v: &'a Value, path: &[Segment], out: &mut Vec<&'a Value>) {
    let Some((first, rest)) = path.split_first() else {
        out.push(v);
        return;
    };
    match (first, v) {
        (Segment::Key(k), Value::Map(m)) => {
            if let Some(x) = m.get(k) {
                resolve(x, rest, out);
            }
        }
        (Segment::Index(i), Value::Array(a)) => {
            let Ok(len) = i64::try_from(a.len()) else {
                return;
            };
            let idx = if *i < 0 { i.checked_add(len) } else { Some(*i) };
            if let Some(x) = idx
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| a.get(i))
            {
                resolve(x, rest, out);
            }
        }
        (Segment::Each, Value::Array(a)) => {
            for x in a {
                resolve(x, rest, out);
            }
        }
        _ => {}
    }
}

fn expr_error(msg: String) -> expr::Error {
    expr::Error::ExprError(msg)
}

fn one_arg(name: &str, args: &[Value]) -> expr::Result<Value> {
    match args {
        [v] => Ok(v.clone()),
        _ => Err(expr_error(format!(
            "{name} takes one argument, got {}",
            args.len()
        ))),
    }
}

/// `asInt`: Argo's `strconv.ParseInt` for strings, truncation for floats; anything else is an
/// error (Argo panics, which expr turns into an error).
fn as_int(v: &Value) -> expr::Result<Value> {
    match v {
        Value::Integer(i) => Ok(Value::Integer(*i)),
        Value::Float(f) if f.is_finite() && f.abs() < 9.2e18 => {
            Ok(Value::Integer(f.trunc() as i64))
        }
        Value::Float(f) => Err(expr_error(format!("asInt: {f} does not fit an integer"))),
        Value::String(s) => s
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| expr_error(format!("strconv.ParseInt: parsing {s:?}: invalid syntax"))),
        other => Err(expr_error(format!(
            "asInt: cannot convert {} to int",
            go_type(other)
        ))),
    }
}

/// `asFloat`: Argo's `strconv.ParseFloat` for strings.
fn as_float(v: &Value) -> expr::Result<Value> {
    match v {
        Value::Integer(i) => Ok(Value::Float(*i as f64)),
        Value::Float(f) => Ok(Value::Float(*f)),
        Value::String(s) => s
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| expr_error(format!("strconv.ParseFloat: parsing {s:?}: invalid syntax"))),
        other => Err(expr_error(format!(
            "asFloat: cannot convert {} to float64",
            go_type(other)
        ))),
    }
}

fn float_arg(name: &str, v: &Value) -> expr::Result<f64> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Integer(i) => Ok(*i as f64),
        other => Err(expr_error(format!(
            "{name}: expected float64, got {}",
            go_type(other)
        ))),
    }
}

/// The environment: expr's builtins plus Argo's functions.
static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.add_function("asInt", |c| as_int(&one_arg("asInt", &c.args)?));
    env.add_function("asFloat", |c| as_float(&one_arg("asFloat", &c.args)?));
    env.add_function("isNaN", |c| {
        Ok(Value::Bool(
            float_arg("isNaN", &one_arg("isNaN", &c.args)?)?.is_nan(),
        ))
    });
    env.add_function("isInf", |c| {
        Ok(Value::Bool(
            float_arg("isInf", &one_arg("isInf", &c.args)?)?.is_infinite(),
        ))
    });
    // Argo's isNil and default ignore their first argument: they test the whole result.
    env.add_function("isNil", |c| {
        one_arg("isNil", &c.args)?;
        Ok(Value::Bool(matches!(
            c.ctx.get("result"),
            None | Some(Value::Nil)
        )))
    });
    env.add_function("default", |c| match c.args.as_slice() {
        [_, d] => Ok(match c.ctx.get("result") {
            None | Some(Value::Nil) => d.clone(),
            Some(r) => r.clone(),
        }),
        _ => Err(expr_error(format!(
            "default takes two arguments, got {}",
            c.args.len()
        ))),
    });
    env.add_function(EQ_FN, |c| {
        checked_equal("==", &c.args, c.env).map(Value::Bool)
    });
    env.add_function(NE_FN, |c| {
        checked_equal("!=", &c.args, c.env).map(|eq| Value::Bool(!eq))
    });
    for name in ["reduce", "repeat"] {
        env.add_function(name, move |_| {
            Err(expr_error(format!("{name} is not available in conditions")))
        });
    }
    env
});

/// The function `A == B` becomes (see [`guard_equality`]); `$` keeps it out of users' reach
/// (the scan refuses unknown functions in the source).
const EQ_FN: &str = "$eq";
/// The function `A != B` becomes.
const NE_FN: &str = "$ne";

/// The crate's own equality, run on two bound values (numbers of both kinds, arrays and maps
/// compare as the crate compares them).
static EQUAL: LazyLock<Option<Program>> = LazyLock::new(|| expr::compile("$l == $r").ok());

/// `$eq`/`$ne`: two values of different kinds (number, string, bool) are an error, Go's
/// wording; others compare as the crate's `==` does. `nil`, arrays and maps keep their
/// usual answers (`result.x == nil` is a question, not a mistake).
fn checked_equal(op: &str, args: &[Value], env: &Environment<'_>) -> expr::Result<bool> {
    let [left, right] = args else {
        return Err(expr_error(format!(
            "{op} takes two operands, got {}",
            args.len()
        )));
    };
    if let (Some(l), Some(r)) = (Kind::of_value(left), Kind::of_value(right))
        && l.class() != r.class()
    {
        return Err(expr_error(
            ArgoExprError::Mismatch {
                op: op.to_string(),
                left: l.go_name(),
                right: r.go_name(),
            }
            .to_string(),
        ));
    }
    let program = EQUAL
        .as_ref()
        .ok_or_else(|| expr_error("the equality program does not compile".into()))?;
    let mut ctx = Context::default();
    ctx.insert("$l", left.clone());
    ctx.insert("$r", right.clone());
    match env.run(program, &ctx)? {
        Value::Bool(b) => Ok(b),
        other => Err(expr_error(format!(
            "{op} gave {} instead of a bool",
            go_type(&other)
        ))),
    }
}

/// Rewrites each `A == B` / `A != B` of the normalised text into `$eq(A, B)` / `$ne(A, B)`.
///
/// Operands are delimited as the crate's grammar binds them: `==` and `!=` share a level
/// with the other comparisons, `in`, `matches`, `contains`, `startsWith` and `endsWith`
/// (left-associative); only `and`/`or`, the ternary, the pipe, separators and brackets bind
/// looser. The text parsed before the rewrite, so brackets balance.
fn guard_equality(text: &str) -> Result<String, ArgoExprError> {
    let toks = tokenize(text)?;
    // (byte offset, span length, function): at one offset closes come before opens; outer
    // spans open first and close last.
    let mut opens: Vec<(usize, usize, &str)> = Vec::new();
    let mut closes: Vec<(usize, usize)> = Vec::new();
    let mut commas: BTreeSet<usize> = BTreeSet::new();
    for (k, (_, _, tok)) in toks.iter().enumerate() {
        let func = match tok {
            Tok::Punct(p) if p == "==" => EQ_FN,
            Tok::Punct(p) if p == "!=" => NE_FN,
            _ => continue,
        };
        let (Some(first), Some(last)) = (left_start(&toks, k), right_end(&toks, k)) else {
            continue;
        };
        let (start, end) = (toks[first].0, toks[last].1);
        opens.push((start, end - start, func));
        closes.push((end, end - start));
        commas.insert(k);
    }
    if commas.is_empty() {
        return Ok(text.to_string());
    }
    opens.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    closes.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut marks: BTreeSet<usize> = opens.iter().map(|x| x.0).collect();
    marks.extend(closes.iter().map(|x| x.0));
    marks.extend(commas.iter().map(|k| toks[*k].0));
    let mut out = String::with_capacity(text.len() + 8 * commas.len());
    let (mut o, mut c, mut copied) = (0, 0, 0);
    for at in marks {
        out.push_str(&text[copied..at]);
        copied = at;
        while closes.get(c).is_some_and(|x| x.0 == at) {
            out.push(')');
            c += 1;
        }
        if let Some(k) = commas.iter().find(|k| toks[**k].0 == at) {
            out.push(',');
            copied = toks[*k].1;
        }
        while let Some((_, _, func)) = opens.get(o).filter(|x| x.0 == at) {
            out.push_str(func);
            out.push('(');
            o += 1;
        }
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

/// True when token `j` is one of `words`, used as an operator (not a member name after `.`/`?.`).
fn word_at(toks: &[(usize, usize, Tok)], j: usize, words: &[&str]) -> bool {
    let member = j
        .checked_sub(1)
        .is_some_and(|p| matches!(&toks[p].2, Tok::Punct(d) if d == "." || d == "?."));
    matches!(toks.get(j), Some((_, _, Tok::Ident(w))) if words.contains(&w.as_str())) && !member
}

/// First token of the left operand of the comparison at `k`: back to the nearest looser
/// operator, separator or unmatched opening bracket (same-level operators stay inside: the
/// level is left-associative).
fn left_start(toks: &[(usize, usize, Tok)], k: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut first = k;
    for j in (0..k).rev() {
        match &toks[j].2 {
            Tok::Punct(p) if matches!(p.as_str(), ")" | "]" | "}") => depth += 1,
            Tok::Punct(p) if matches!(p.as_str(), "(" | "[" | "{") => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            Tok::Punct(p)
                if depth == 0
                    && matches!(p.as_str(), "," | ";" | "?" | ":" | "&&" | "||" | "|") =>
            {
                break;
            }
            Tok::Ident(_) if depth == 0 && word_at(toks, j, &["and", "or", "if", "else"]) => break,
            _ => {}
        }
        first = j;
    }
    (first < k).then_some(first)
}

/// Last token of the right operand of the comparison at `k`: up to the next operator of the
/// same or a looser level, separator, unmatched closing bracket, or an `if` block's `{`.
fn right_end(toks: &[(usize, usize, Tok)], k: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut last = k;
    for j in k + 1..toks.len() {
        let prev_ends_operand = j > k + 1
            && match &toks[j - 1].2 {
                Tok::Ident(w) => !OPERATOR_WORDS.contains(&w.as_str()),
                Tok::Num(..) | Tok::Str(_) | Tok::Arg => true,
                Tok::Punct(p) => matches!(p.as_str(), ")" | "]" | "}" | "bytes"),
            };
        match &toks[j].2 {
            Tok::Punct(p) if p == "{" && depth == 0 && prev_ends_operand => break,
            Tok::Punct(p) if matches!(p.as_str(), "(" | "[" | "{") => depth += 1,
            Tok::Punct(p) if matches!(p.as_str(), ")" | "]" | "}") => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            Tok::Punct(p)
                if depth == 0
                    && matches!(
                        p.as_str(),
                        "," | ";"
                            | "?"
                            | ":"
                            | "&&"
                            | "||"
                            | "|"
                            | "=="
                            | "!="
                            | "<"
                            | ">"
                            | "<="
                            | ">="
                    ) =>
            {
                break;
            }
            Tok::Ident(_)
                if depth == 0
                    && (word_at(
                        toks,
                        j,
                        &[
                            "and",
                            "or",
                            "in",
                            "contains",
                            "startsWith",
                            "endsWith",
                            "matches",
                            "else",
                        ],
                    ) || (prev_ends_operand
                        && word_at(toks, j, &["not"])
                        && word_at(toks, j + 1, &["in"]))) =>
            {
                break;
            }
            _ => {}
        }
        last = j;
    }
    (last > k).then_some(last)
}

/// The normalised text and what the scan learnt.
struct Normalized {
    text: String,
    /// For each byte of `text`, the byte of the source it came from.
    origin: Vec<usize>,
    functions: BTreeSet<String>,
    arg_names: BTreeSet<String>,
    checks: Vec<PathCheck>,
}

impl Normalized {
    fn push(&mut self, s: &str, from: usize) {
        self.text.push_str(s);
        self.origin.extend(std::iter::repeat_n(from, s.len()));
    }
}

/// What an operand seen by the scan is, for the comparison check.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Known(Kind),
    Path(Vec<Segment>),
    Unknown,
}

/// One token of the scan.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(Kind, String),
    Str(String),
    /// `{{args.x}}` outside a string.
    Arg,
    Punct(String),
}

fn column(src: &str, at: usize) -> usize {
    src[..at.min(src.len())].chars().count() + 1
}

/// Splits `src` into tokens with their byte offsets; strings and arg tags become single tokens.
fn tokenize(src: &str) -> Result<Vec<(usize, usize, Tok)>, ArgoExprError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if b[i..].starts_with(b"/*") {
            match src[i + 2..].find("*/") {
                Some(end) => i += 2 + end + 2,
                None => i = b.len(),
            }
            continue;
        }
        if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == b'\\' && c != b'`' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(b.len());
            out.push((start, i, Tok::Str(src[start..i].to_string())));
            continue;
        }
        if b[i..].starts_with(b"{{") {
            let Some(end) = src[i..].find("}}") else {
                return Err(ArgoExprError::Template {
                    column: column(src, i),
                    message: "`{{` without `}}`".into(),
                });
            };
            let inner = src[i + 2..i + end].trim();
            i += end + 2;
            match inner.strip_prefix("args.") {
                Some(name) if is_arg_name(name) => out.push((start, i, Tok::Arg)),
                _ => {
                    return Err(ArgoExprError::Template {
                        column: column(src, start),
                        message: format!("{{{{{inner}}}}} is not {{{{args.NAME}}}}"),
                    });
                }
            }
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let mut float = false;
            while i < b.len() {
                let d = b[i];
                let exp_sign = (d == b'+' || d == b'-')
                    && matches!(b[i - 1], b'e' | b'E')
                    && !src[start..i].starts_with("0x")
                    && !src[start..i].starts_with("0X");
                if d.is_ascii_alphanumeric() || d == b'_' || exp_sign {
                    if (d == b'e' || d == b'E') && !src[start..i].starts_with("0x") {
                        float = true;
                    }
                    i += 1;
                } else if d == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    float = true;
                    i += 1;
                } else if d == b'.' && b.get(i + 1) != Some(&b'.') && !float {
                    // `1.` is a float literal; `1..2` is a range.
                    float = true;
                    i += 1;
                } else {
                    break;
                }
            }
            let kind = if float { Kind::Float } else { Kind::Int };
            out.push((start, i, Tok::Num(kind, src[start..i].to_string())));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c == b'#' {
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &src[start..i];
            // `b"..."`: a bytes literal.
            if (word == "b" || word == "B") && matches!(b.get(i), Some(b'"' | b'\'')) {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(b.len());
                out.push((start, i, Tok::Punct("bytes".into())));
                continue;
            }
            out.push((start, i, Tok::Ident(word.to_string())));
            continue;
        }
        let two = src.get(i..i + 2).unwrap_or("");
        let p = if ["==", "!=", "<=", ">=", "&&", "||", "??", "?.", "..", "**"].contains(&two) {
            two
        } else {
            // One character (possibly multi-byte: the parser will refuse it).
            let ch = src[i..].chars().next().unwrap_or(' ');
            &src[i..i + ch.len_utf8()]
        };
        i += p.len();
        out.push((start, i, Tok::Punct(p.to_string())));
    }
    Ok(out)
}

fn is_arg_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Escapes text for a double-quoted expr string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The text between a string literal's quotes; `None` when it is not closed.
fn unquote(lit: &str) -> Option<&str> {
    let q = lit.get(..1)?;
    lit.strip_prefix(q)?.strip_suffix(q)
}

/// Rewrites a string literal holding `{{args.x}}` tags into a concatenation.
fn rewrite_string(lit: &str) -> Result<Option<(String, Vec<String>)>, String> {
    if !lit.contains("{{") {
        return Ok(None);
    }
    let q = &lit[..1];
    let body = unquote(lit).ok_or("a string without its closing quote")?;
    let mut parts = Vec::new();
    let mut names = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else {
            return Err("`{{` without `}}` in a string".into());
        };
        let inner = rest[open + 2..open + close].trim();
        let Some(name) = inner.strip_prefix("args.").filter(|n| is_arg_name(n)) else {
            return Err(format!("{{{{{inner}}}}} is not {{{{args.NAME}}}}"));
        };
        if !rest[..open].is_empty() {
            parts.push(format!("{q}{}{q}", &rest[..open]));
        }
        parts.push(format!("{ARGTEXT_VAR}[{}]", quote(name)));
        names.push(name.to_string());
        rest = &rest[open + close + 2..];
    }
    if !rest.is_empty() {
        parts.push(format!("{q}{rest}{q}"));
    }
    Ok(Some((format!("({})", parts.join(" + ")), names)))
}

/// The normalisation and the checks of the module doc, in one pass over the tokens.
fn normalize(src: &str) -> Result<Normalized, ArgoExprError> {
    let toks = tokenize(src)?;
    let operators = toks
        .iter()
        .filter(|(_, _, t)| match t {
            Tok::Punct(p) => !matches!(p.as_str(), ")" | "]" | "}" | "," | ":" | ";" | "bytes"),
            Tok::Ident(w) => OPERATOR_WORDS.contains(&w.as_str()),
            _ => false,
        })
        .count();
    if operators > MAX_OPERATORS {
        return Err(ArgoExprError::TooManyOperators);
    }
    let mut n = Normalized {
        text: String::with_capacity(src.len() + 16),
        origin: Vec::with_capacity(src.len() + 16),
        functions: BTreeSet::new(),
        arg_names: BTreeSet::new(),
        checks: Vec::new(),
    };
    // Open brackets, and how many of them are braces (predicates, maps).
    let mut stack: Vec<(char, usize)> = Vec::new();
    // For each open brace: the `result` path its predicate iterates over, when known.
    let mut roots: Vec<Option<Vec<Segment>>> = Vec::new();
    let mut braces = 0usize;
    let mut copied = 0usize;
    let unsupported = |what: &str, at: usize, why: &'static str| ArgoExprError::Unsupported {
        what: what.to_string(),
        column: column(src, at),
        why,
    };
    // Operands seen, by the index of their last token: the outermost one that ends there.
    let mut ends: BTreeMap<usize, (Operand, usize)> = BTreeMap::new();
    // A comparison waiting for its right operand: operator and left operand.
    let mut pending: Option<(String, Operand)> = None;
    for (idx, (start, end, tok)) in toks.iter().enumerate() {
        let (start, end) = (*start, *end);
        // Whitespace and comments are copied verbatim.
        n.push(&src[copied..start], copied);
        copied = end;
        let prev = idx.checked_sub(1).map(|p| &toks[p].2);
        let next = toks.get(idx + 1).map(|t| &t.2);
        let prev_ends_operand = match prev {
            Some(Tok::Ident(w)) => !OPERATOR_WORDS.contains(&w.as_str()),
            Some(Tok::Num(..) | Tok::Str(_) | Tok::Arg) => true,
            Some(Tok::Punct(p)) => matches!(p.as_str(), ")" | "]" | "}" | "bytes"),
            None => false,
        };
        // The operand that starts at this token, if one does.
        let mut starts: Option<Operand> = None;
        match tok {
            Tok::Str(lit) => {
                match rewrite_string(lit).map_err(|message| ArgoExprError::Template {
                    column: column(src, start),
                    message,
                })? {
                    Some((text, names)) => {
                        n.push(&text, start);
                        n.arg_names.extend(names);
                    }
                    None => n.push(lit, start),
                }
                starts = Some(Operand::Known(Kind::Str));
            }
            Tok::Num(k, text) => {
                n.push(text, start);
                starts = Some(Operand::Known(*k));
            }
            Tok::Arg => {
                let inner = src[start + 2..end - 2].trim();
                let name = inner.strip_prefix("args.").unwrap_or(inner);
                n.arg_names.insert(name.to_string());
                n.push(&format!("{ARGS_VAR}[{}]", quote(name)), start);
                starts = Some(Operand::Unknown);
            }
            Tok::Ident(w) => {
                let member = matches!(prev, Some(Tok::Punct(p)) if p == "." || p == "?.");
                // `not (x)` and `if (x)` are operators before a bracket, not calls.
                let call = matches!(next, Some(Tok::Punct(p)) if p == "(")
                    && !OPERATOR_WORDS.contains(&w.as_str());
                if w == "let" && !member {
                    return Err(unsupported(
                        "`let`",
                        start,
                        "a chain of lets can build values of any size",
                    ));
                }
                if call && !member {
                    if w == "reduce" || w == "repeat" {
                        return Err(unsupported(
                            &format!("`{w}`"),
                            start,
                            "it can build values of any size",
                        ));
                    }
                    if !FUNCTIONS.contains(&w.as_str()) {
                        return Err(ArgoExprError::UnknownFunction(w.clone()));
                    }
                    n.functions.insert(w.clone());
                } else if !member && !is_keyword(w) && !w.starts_with('#') {
                    let map_key = matches!(next, Some(Tok::Punct(p)) if p == ":")
                        && stack.last().map(|(c, _)| *c) == Some('{')
                        && matches!(prev, Some(Tok::Punct(p)) if p == "{" || p == ",");
                    // Inside a predicate a bare name may be a field of `#`.
                    if w != "result" && w != "$env" && braces == 0 && !map_key {
                        return Err(ArgoExprError::UnknownName(w.clone()));
                    }
                }
                n.push(w, start);
                if !member {
                    starts = Some(if call {
                        function_kind(w).map_or(Operand::Unknown, Operand::Known)
                    } else if w == "result" {
                        Operand::Path(Vec::new())
                    } else if w == "#" {
                        element(&roots, None)
                    } else if w == "true" || w == "false" {
                        Operand::Known(Kind::Bool)
                    } else {
                        Operand::Unknown
                    });
                }
            }
            Tok::Punct(p) => match p.as_str() {
                "." => {
                    let shorthand = !prev_ends_operand
                        && braces > 0
                        && matches!(next, Some(Tok::Ident(w)) if !w.starts_with('#') && !w.starts_with('$'))
                        && toks.get(idx + 1).is_some_and(|t| t.0 == end);
                    if shorthand {
                        n.push("#.", start);
                        let field = match next {
                            Some(Tok::Ident(w)) => Some(w.clone()),
                            _ => None,
                        };
                        starts = Some(element(&roots, field));
                    } else {
                        n.push(".", start);
                    }
                }
                ".." => {
                    return Err(unsupported(
                        "the range operator `..`",
                        start,
                        "a range can be of any size",
                    ));
                }
                "(" | "[" | "{" => {
                    let ch = p.chars().next().unwrap_or('(');
                    if !prev_ends_operand || ch == '{' {
                        starts = Some(Operand::Unknown);
                    }
                    if ch == '{' {
                        // `f(result.path, {...})`: `#` is an element of that path.
                        let root = match (prev, stack.last(), idx.checked_sub(2)) {
                            (Some(Tok::Punct(comma)), Some(('(', open)), Some(arg_end))
                                if comma == "," =>
                            {
                                match ends.get(&arg_end) {
                                    Some((Operand::Path(p), first)) if *first == open + 1 => {
                                        Some(p.clone())
                                    }
                                    _ => None,
                                }
                            }
                            _ => None,
                        };
                        roots.push(root);
                    }
                    stack.push((ch, idx));
                    if ch == '{' {
                        braces += 1;
                        if braces > MAX_PREDICATE_DEPTH {
                            return Err(ArgoExprError::TooDeep {
                                limit: MAX_PREDICATE_DEPTH,
                                column: column(src, start),
                            });
                        }
                    }
                    if stack.len() > MAX_DEPTH {
                        return Err(ArgoExprError::TooDeep {
                            limit: MAX_DEPTH,
                            column: column(src, start),
                        });
                    }
                    n.push(p, start);
                }
                ")" | "]" | "}" => {
                    if stack.pop().map(|(c, _)| c) == Some('{') {
                        braces = braces.saturating_sub(1);
                        roots.pop();
                    }
                    n.push(p, start);
                }
                "bytes" => {
                    n.push(&src[start..end], start);
                    starts = Some(Operand::Unknown);
                }
                _ => n.push(p, start),
            },
        }
        if let Some(op) = starts
            && !prev_ends_operand
        {
            let (operand, last) = operand_extent(&toks, idx, op);
            if let Some((cmp, left)) = pending.take() {
                let right = if next_is_boundary(&toks, last) {
                    operand.clone()
                } else {
                    Operand::Unknown
                };
                check_pair(&cmp, &left, &right, &mut n)?;
            }
            ends.entry(last).or_insert((operand, idx));
        }
        if let Tok::Punct(p) = tok
            && matches!(p.as_str(), "==" | "!=" | "<" | ">" | "<=" | ">=")
        {
            let left = match idx.checked_sub(1).and_then(|l| ends.get(&l)) {
                Some((o, first)) if boundary_before(&toks, *first) => o.clone(),
                _ => Operand::Unknown,
            };
            pending = Some((p.clone(), left));
        }
    }
    n.push(&src[copied..], copied);
    n.origin.push(src.len());
    Ok(n)
}

/// The operand `#` (or `#.field`) of the innermost predicate: a path through each element of
/// the `result` path it iterates over, when known.
fn element(roots: &[Option<Vec<Segment>>], field: Option<String>) -> Operand {
    match roots.last() {
        Some(Some(root)) => {
            let mut p = root.clone();
            p.push(Segment::Each);
            p.extend(field.map(Segment::Key));
            Operand::Path(p)
        }
        _ => Operand::Unknown,
    }
}

/// True when the token after `last` ends an operand of a comparison (so the operand before it
/// is the whole operand, not the head of `a + b`).
fn next_is_boundary(toks: &[(usize, usize, Tok)], last: usize) -> bool {
    match toks.get(last + 1).map(|t| &t.2) {
        None => true,
        Some(Tok::Punct(p)) => matches!(
            p.as_str(),
            ")" | "]"
                | "}"
                | ","
                | "&&"
                | "||"
                | "?"
                | ":"
                | ";"
                | "=="
                | "!="
                | "<"
                | ">"
                | "<="
                | ">="
        ),
        Some(Tok::Ident(w)) => matches!(w.as_str(), "and" | "or"),
        _ => false,
    }
}

/// True when the token before `first` starts an operand of a comparison (so the operand from
/// `first` is the whole operand, not the tail of `a + b`).
fn boundary_before(toks: &[(usize, usize, Tok)], first: usize) -> bool {
    match first.checked_sub(1).map(|p| &toks[p].2) {
        None => true,
        Some(Tok::Punct(p)) => matches!(
            p.as_str(),
            "(" | "[" | "{" | "," | "&&" | "||" | "?" | ":" | ";"
        ),
        Some(Tok::Ident(w)) => matches!(w.as_str(), "and" | "or"),
        _ => false,
    }
}

/// Index of the bracket closing the one at `open`.
fn matching_close(toks: &[(usize, usize, Tok)], open: usize) -> usize {
    let mut depth = 0usize;
    for (j, t) in toks.iter().enumerate().skip(open) {
        match &t.2 {
            Tok::Punct(p) if p == "(" || p == "[" || p == "{" => depth += 1,
            Tok::Punct(p) if p == ")" || p == "]" || p == "}" => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    toks.len().saturating_sub(1)
}

/// From the token starting an operand, follows its postfix chain (`.x`, `[i]`, `(args)`) and
/// returns what the operand is and the index of its last token.
fn operand_extent(toks: &[(usize, usize, Tok)], first: usize, start: Operand) -> (Operand, usize) {
    let mut op = start;
    let mut i = first;
    match &toks[first].2 {
        Tok::Ident(_) if matches!(toks.get(first + 1).map(|t| &t.2), Some(Tok::Punct(p)) if p == "(") =>
        {
            i = matching_close(toks, first + 1);
        }
        Tok::Punct(p) if p == "(" || p == "[" || p == "{" => {
            i = matching_close(toks, first);
            op = Operand::Unknown;
        }
        // The `.field` shorthand: `.` then the name.
        Tok::Punct(p) if p == "." => i = first + 1,
        _ => {}
    }
    loop {
        match (toks.get(i + 1).map(|t| &t.2), toks.get(i + 2).map(|t| &t.2)) {
            (Some(Tok::Punct(p)), Some(Tok::Ident(w))) if p == "." || p == "?." => {
                op = match op {
                    Operand::Path(mut segs) if p == "." => {
                        segs.push(Segment::Key(w.clone()));
                        Operand::Path(segs)
                    }
                    _ => Operand::Unknown,
                };
                i += 2;
                if matches!(toks.get(i + 1).map(|t| &t.2), Some(Tok::Punct(p)) if p == "(") {
                    i = matching_close(toks, i + 1);
                    op = Operand::Unknown;
                }
            }
            (Some(Tok::Punct(p)), _) if p == "[" => {
                let close = matching_close(toks, i + 1);
                op = match (op, toks.get(i + 2..close)) {
                    (Operand::Path(mut segs), Some([(_, _, Tok::Num(Kind::Int, text))])) => {
                        match text.parse::<i64>() {
                            Ok(ix) => {
                                segs.push(Segment::Index(ix));
                                Operand::Path(segs)
                            }
                            Err(_) => Operand::Unknown,
                        }
                    }
                    (
                        Operand::Path(mut segs),
                        Some([(_, _, Tok::Punct(minus)), (_, _, Tok::Num(Kind::Int, text))]),
                    ) if minus == "-" => match text.parse::<i64>() {
                        Ok(ix) => {
                            segs.push(Segment::Index(-ix));
                            Operand::Path(segs)
                        }
                        Err(_) => Operand::Unknown,
                    },
                    (Operand::Path(mut segs), Some([(_, _, Tok::Str(lit))]))
                        if !lit.contains('\\') && !lit.contains("{{") =>
                    {
                        match unquote(lit) {
                            Some(key) => {
                                segs.push(Segment::Key(key.to_string()));
                                Operand::Path(segs)
                            }
                            None => Operand::Unknown,
                        }
                    }
                    _ => Operand::Unknown,
                };
                i = close;
            }
            _ => break,
        }
    }
    (op, i)
}

/// Checks a comparison of two operands whose types the text tells, or records a `result` path
/// compared with an operand of known type for the evaluation-time check.
fn check_pair(
    op: &str,
    left: &Operand,
    right: &Operand,
    n: &mut Normalized,
) -> Result<(), ArgoExprError> {
    match (left, right) {
        (Operand::Known(l), Operand::Known(r)) if l.class() != r.class() => {
            Err(ArgoExprError::Mismatch {
                op: op.to_string(),
                left: l.go_name(),
                right: r.go_name(),
            })
        }
        (Operand::Path(path), Operand::Known(other)) => {
            n.checks.push(PathCheck {
                op: op.to_string(),
                path: path.clone(),
                other: *other,
                path_left: true,
            });
            Ok(())
        }
        (Operand::Known(other), Operand::Path(path)) => {
            n.checks.push(PathCheck {
                op: op.to_string(),
                path: path.clone(),
                other: *other,
                path_left: false,
            });
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A parse error in terms of the source as written: line, column, what was expected.
fn syntax_error(src: &str, n: &Normalized, e: expr::Error) -> ArgoExprError {
    let (pos, message) = match &e {
        expr::Error::PestError(pe) => {
            let pos = match pe.location {
                pest::error::InputLocation::Pos(p) => p,
                pest::error::InputLocation::Span((s, _)) => s,
            };
            let message = match &pe.variant {
                pest::error::ErrorVariant::ParsingError {
                    positives,
                    negatives,
                } => expected_message(positives, negatives),
                pest::error::ErrorVariant::CustomError { message } => message.clone(),
            };
            (pos, message)
        }
        other => (0, other.to_string()),
    };
    let at = n
        .origin
        .get(pos)
        .copied()
        .unwrap_or(src.len())
        .min(src.len());
    let line_start = src[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = src[at..].find('\n').map_or(src.len(), |i| at + i);
    let line = src[..at].matches('\n').count() + 1;
    let col = src[line_start..at].chars().count() + 1;
    let found = src[at..]
        .chars()
        .next()
        .map_or("the end of the condition".to_string(), |c| format!("`{c}`"));
    ArgoExprError::Syntax {
        line,
        column: col,
        message: format!("{message}, found {found}"),
        excerpt: src[line_start..line_end].to_string(),
        caret: format!("{}^", " ".repeat(col - 1)),
    }
}

/// `expected an operator or the end of the condition`.
fn expected_message(positives: &[expr::Rule], negatives: &[expr::Rule]) -> String {
    let mut names: Vec<&'static str> = Vec::new();
    for r in positives {
        let name = rule_name(&format!("{r:?}"));
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        let unexpected: Vec<String> = negatives.iter().map(|r| format!("{r:?}")).collect();
        return format!("unexpected {}", unexpected.join(", "));
    }
    let text = match names.as_slice() {
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
        [] => String::new(),
    };
    format!("expected {text}")
}

/// A grammar rule's name as a reader knows it.
fn rule_name(rule: &str) -> &'static str {
    match rule {
        "EOI" => "the end of the condition",
        "expr" | "term" | "value" | "ident" | "func" | "array" | "map" | "string" | "int"
        | "decimal" | "bool" | "nil" | "prefix" | "conditional_if" | "program" | "bytes"
        | "string_multiline" | "negation_op" | "sign_op" => "a value",
        "predicate" | "block" => "a predicate `{...}`",
        "index_op" | "range_start_op" | "range_end_op" | "opt_index_op" => "`[`",
        "membership_op" | "opt_membership_op" | "method_call" => "`.`",
        "ternary" => "`?`",
        "default_op" => "`??`",
        "pipe" => "`|`",
        _ => "an operator",
    }
}

#[cfg(test)]
#[path = "argo_expr_tests.rs"]
mod tests;
