//! A small MQE (Metrics Query Expression) parser and evaluator.
//!
//! It covers what canary analysis needs: metrics, label selectors, arithmetic,
//! comparisons, `avg/latest/min/max/sum/count`, `round/abs/ceil/floor`, with
//! OAP's value formatting and error texts.

use serde_json::{Value as Json, json};

/// One result series: labels plus one (id, value) per point.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub points: Vec<(Option<String>, Option<f64>)>,
}

/// Why a metric could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    #[error("Metric: [{0}] does not exist.")]
    UnknownMetric(String),
    #[error("invalid entity")]
    InvalidEntity,
    #[error("Internal IO exception, query metrics error.")]
    Storage,
}

/// A label selector: key and the requested values (`{p='50,99'}`).
pub type Selector = (String, Vec<String>);

/// Where metric data comes from.
pub trait Source {
    fn fetch(&self, metric: &str, selector: Option<&Selector>) -> Result<Vec<Series>, FetchError>;
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Agg {
    Avg,
    Sum,
    Count,
    Min,
    Max,
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Math {
    Abs,
    Ceil,
    Floor,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Num(f64),
    Metric(String, Option<Selector>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Agg(Agg, Box<Expr>),
    Math(Math, Box<Expr>),
    Round(Box<Expr>, i32),
    Neg(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64, String),
    Str(String),
    Sym(&'static str),
    Eof,
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Ident(s) => s.clone(),
            Tok::Num(_, s) => s.clone(),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Sym(s) => s.to_string(),
            Tok::Eof => "<EOF>".to_string(),
        }
    }
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((start, Tok::Ident(chars[start..i].iter().collect())));
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let Ok(v) = text.parse::<f64>() else {
                return Err(format!(
                    "line 1:{start} token recognition error at: '{text}'"
                ));
            };
            out.push((start, Tok::Num(v, text)));
        } else if c == '\'' || c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += 1;
            }
            if i >= chars.len() {
                let rest: String = chars[start..].iter().collect();
                return Err(format!(
                    "line 1:{start} token recognition error at: '{rest}'"
                ));
            }
            out.push((start, Tok::Str(chars[start + 1..i].iter().collect())));
            i += 1;
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let sym = match two.as_str() {
                ">=" => Some(">="),
                "<=" => Some("<="),
                "==" => Some("=="),
                "!=" => Some("!="),
                _ => None,
            };
            if let Some(s) = sym {
                out.push((start, Tok::Sym(s)));
                i += 2;
                continue;
            }
            let s = match c {
                '(' => "(",
                ')' => ")",
                '{' => "{",
                '}' => "}",
                ',' => ",",
                '+' => "+",
                '-' => "-",
                '*' => "*",
                '/' => "/",
                '%' => "%",
                '>' => ">",
                '<' => "<",
                '=' => "=",
                _ => return Err(format!("line 1:{start} token recognition error at: '{c}'")),
            };
            out.push((start, Tok::Sym(s)));
            i += 1;
        }
    }
    out.push((chars.len(), Tok::Eof));
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    /// Nesting depth, capped so hostile input cannot overflow the stack.
    depth: usize,
}

const MAX_DEPTH: usize = 64;

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map(|t| &t.1).unwrap_or(&Tok::Eof)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map(|t| t.0).unwrap_or(0)
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn mismatch(&self, expecting: &str) -> String {
        format!(
            "line 1:{} mismatched input '{}' expecting {expecting}",
            self.at(),
            self.peek().text()
        )
    }

    fn expect(&mut self, sym: &'static str) -> Result<(), String> {
        if *self.peek() == Tok::Sym(sym) {
            self.bump();
            Ok(())
        } else {
            Err(self.mismatch(&format!("'{sym}'")))
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let left = self.additive()?;
        let op = match self.peek() {
            Tok::Sym(">") => BinOp::Gt,
            Tok::Sym(">=") => BinOp::Ge,
            Tok::Sym("<") => BinOp::Lt,
            Tok::Sym("<=") => BinOp::Le,
            Tok::Sym("==") => BinOp::Eq,
            Tok::Sym("!=") => BinOp::Ne,
            _ => return Ok(left),
        };
        self.bump();
        let right = self.additive()?;
        Ok(Expr::Bin(op, Box::new(left), Box::new(right)))
    }

    fn additive(&mut self) -> Result<Expr, String> {
        let mut left = self.term()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("+") => BinOp::Add,
                Tok::Sym("-") => BinOp::Sub,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.term()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn term(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("*") => BinOp::Mul,
                Tok::Sym("/") => BinOp::Div,
                Tok::Sym("%") => BinOp::Mod,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.unary()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("line 1:{} expression nested too deeply", self.at()));
        }
        let out = if *self.peek() == Tok::Sym("-") {
            self.bump();
            self.unary().map(|e| Expr::Neg(Box::new(e)))
        } else {
            self.primary()
        };
        self.depth -= 1;
        out
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.peek().clone() {
            Tok::Num(v, _) => {
                self.bump();
                Ok(Expr::Num(v))
            }
            Tok::Sym("(") => {
                self.bump();
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Ident(name) => {
                self.bump();
                if *self.peek() == Tok::Sym("(") {
                    self.call(&name)
                } else {
                    let sel = if *self.peek() == Tok::Sym("{") {
                        Some(self.selector()?)
                    } else {
                        None
                    };
                    Ok(Expr::Metric(name, sel))
                }
            }
            _ => Err(self.mismatch("{'(', NUMBER, NAME_STRING}")),
        }
    }

    fn call(&mut self, name: &str) -> Result<Expr, String> {
        let agg = match name {
            "avg" => Some(Agg::Avg),
            "sum" => Some(Agg::Sum),
            "count" => Some(Agg::Count),
            "min" => Some(Agg::Min),
            "max" => Some(Agg::Max),
            "latest" => Some(Agg::Latest),
            _ => None,
        };
        let math = match name {
            "abs" => Some(Math::Abs),
            "ceil" => Some(Math::Ceil),
            "floor" => Some(Math::Floor),
            _ => None,
        };
        if agg.is_none() && math.is_none() && name != "round" {
            return Err(format!(
                "line 1:{} extraneous input '(' expecting <EOF>",
                self.at()
            ));
        }
        self.expect("(")?;
        let inner = self.expr()?;
        let out = if name == "round" {
            self.expect(",")?;
            let n = match self.bump() {
                Tok::Num(v, _) if v.fract() == 0.0 && (0.0..=15.0).contains(&v) => v as i32,
                _ => {
                    self.pos = self.pos.saturating_sub(1);
                    return Err(self.mismatch("INTEGER"));
                }
            };
            Expr::Round(Box::new(inner), n)
        } else if let Some(a) = agg {
            Expr::Agg(a, Box::new(inner))
        } else if let Some(m) = math {
            Expr::Math(m, Box::new(inner))
        } else {
            return Err(self.mismatch("')'"));
        };
        self.expect(")")?;
        Ok(out)
    }

    fn selector(&mut self) -> Result<Selector, String> {
        self.expect("{")?;
        let key = match self.bump() {
            Tok::Ident(k) => k,
            _ => {
                self.pos = self.pos.saturating_sub(1);
                return Err(self.mismatch("NAME_STRING"));
            }
        };
        self.expect("=")?;
        let vals = match self.bump() {
            Tok::Str(v) => v,
            _ => {
                self.pos = self.pos.saturating_sub(1);
                return Err(self.mismatch("VALUE_STRING"));
            }
        };
        self.expect("}")?;
        let values = vals
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        Ok((key, values))
    }
}

fn parse(src: &str) -> Result<Expr, String> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr()?;
    if *p.peek() != Tok::Eof {
        return Err(format!(
            "line 1:{} extraneous input '{}' expecting <EOF>",
            p.at(),
            p.peek().text()
        ));
    }
    Ok(e)
}

/// Intermediate value: a plain number or a list of series (single = one point each).
#[derive(Debug, Clone)]
enum Val {
    Scalar(f64),
    Series { single: bool, list: Vec<Series> },
}

fn eval(e: &Expr, src: &dyn Source) -> Result<Val, FetchError> {
    Ok(match e {
        Expr::Num(v) => Val::Scalar(*v),
        Expr::Metric(name, sel) => Val::Series {
            single: false,
            list: src.fetch(name, sel.as_ref())?,
        },
        Expr::Neg(x) => map(eval(x, src)?, |v| -v),
        Expr::Math(m, x) => map(eval(x, src)?, |v| match m {
            Math::Abs => v.abs(),
            Math::Ceil => v.ceil(),
            Math::Floor => v.floor(),
        }),
        Expr::Round(x, n) => {
            let f = 10f64.powi(*n);
            map(eval(x, src)?, move |v| (v * f).round() / f)
        }
        Expr::Agg(a, x) => aggregate(*a, eval(x, src)?),
        Expr::Bin(op, l, r) => binary(*op, eval(l, src)?, eval(r, src)?),
    })
}

fn map(v: Val, f: impl Fn(f64) -> f64) -> Val {
    match v {
        Val::Scalar(x) => Val::Scalar(f(x)),
        Val::Series { single, list } => Val::Series {
            single,
            list: list
                .into_iter()
                .map(|s| Series {
                    labels: s.labels,
                    points: s
                        .points
                        .into_iter()
                        .map(|(id, v)| (id, v.map(&f)))
                        .collect(),
                })
                .collect(),
        },
    }
}

fn apply(op: BinOp, a: f64, b: f64) -> f64 {
    let bool_num = |c: bool| if c { 1.0 } else { 0.0 };
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Mod => a % b,
        BinOp::Gt => bool_num(a > b),
        BinOp::Ge => bool_num(a >= b),
        BinOp::Lt => bool_num(a < b),
        BinOp::Le => bool_num(a <= b),
        BinOp::Eq => bool_num(a == b),
        BinOp::Ne => bool_num(a != b),
    }
}

fn binary(op: BinOp, l: Val, r: Val) -> Val {
    match (l, r) {
        (Val::Scalar(a), Val::Scalar(b)) => Val::Scalar(apply(op, a, b)),
        (Val::Series { single, list }, Val::Scalar(b)) => {
            map(Val::Series { single, list }, |a| apply(op, a, b))
        }
        (Val::Scalar(a), Val::Series { single, list }) => {
            map(Val::Series { single, list }, |b| apply(op, a, b))
        }
        (
            Val::Series {
                single: ls,
                list: ll,
            },
            Val::Series {
                single: rs,
                list: rl,
            },
        ) => {
            let n = ll.len().max(rl.len());
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let a = ll.get(i).or(if ll.len() == 1 { ll.first() } else { None });
                let b = rl.get(i).or(if rl.len() == 1 { rl.first() } else { None });
                let (Some(a), Some(b)) = (a, b) else { continue };
                out.push(combine(op, a, ls, b, rs));
            }
            Val::Series {
                single: ls && rs,
                list: out,
            }
        }
    }
}

/// Pointwise combination; a single value is broadcast over a time series.
fn combine(op: BinOp, a: &Series, a_single: bool, b: &Series, b_single: bool) -> Series {
    let labels = if a.labels.is_empty() {
        b.labels.clone()
    } else {
        a.labels.clone()
    };
    let (base, other, base_left) = if a_single && !b_single {
        (b, a, false)
    } else {
        (a, b, true)
    };
    let points = base
        .points
        .iter()
        .enumerate()
        .map(|(i, (id, x))| {
            let y = if a_single != b_single {
                other.points.first().and_then(|p| p.1)
            } else {
                other.points.get(i).and_then(|p| p.1)
            };
            let v = match (x, y) {
                (Some(x), Some(y)) => Some(if base_left {
                    apply(op, *x, y)
                } else {
                    apply(op, y, *x)
                }),
                _ => None,
            };
            (id.clone(), v)
        })
        .collect();
    Series { labels, points }
}

fn aggregate(a: Agg, v: Val) -> Val {
    let list = match v {
        Val::Scalar(x) => return Val::Scalar(x),
        Val::Series { list, .. } => list,
    };
    let list = list
        .into_iter()
        .map(|s| {
            let present: Vec<(Option<String>, f64)> = s
                .points
                .iter()
                .filter_map(|(id, v)| v.map(|v| (id.clone(), v)))
                .collect();
            let point = match a {
                Agg::Count => (None, Some(present.len() as f64)),
                _ if present.is_empty() => (None, None),
                Agg::Avg => (
                    None,
                    Some(present.iter().map(|p| p.1).sum::<f64>() / present.len() as f64),
                ),
                Agg::Sum => (None, Some(present.iter().map(|p| p.1).sum())),
                Agg::Latest => present
                    .last()
                    .map(|(id, v)| (id.clone(), Some(*v)))
                    .unwrap_or((None, None)),
                Agg::Min => pick(&present, |x, y| x < y),
                Agg::Max => pick(&present, |x, y| x > y),
            };
            Series {
                labels: s.labels,
                points: vec![point],
            }
        })
        .collect();
    Val::Series { single: true, list }
}

fn pick(
    present: &[(Option<String>, f64)],
    better: impl Fn(f64, f64) -> bool,
) -> (Option<String>, Option<f64>) {
    let mut best: Option<&(Option<String>, f64)> = None;
    for p in present {
        if best.is_none_or(|b| better(p.1, b.1)) {
            best = Some(p);
        }
    }
    best.map(|(id, v)| (id.clone(), Some(*v)))
        .unwrap_or((None, None))
}

/// Java `DecimalFormat` with grouping off: ≤3 fraction digits, HALF_EVEN, `∞`/`NaN`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "∞".to_string()
        } else {
            "-∞".to_string()
        };
    }
    let s = format!("{v:.3}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" && v == 0.0 && v.is_sign_positive() {
        "0".to_string()
    } else {
        s
    }
}

/// True when the expression aggregates to a single value at its top.
fn top_is_single(e: &Expr) -> bool {
    match e {
        Expr::Agg(..) | Expr::Num(_) => true,
        Expr::Metric(..) => false,
        Expr::Neg(x) | Expr::Math(_, x) | Expr::Round(x, _) => top_is_single(x),
        Expr::Bin(_, l, r) => top_is_single(l) && top_is_single(r),
    }
}

/// Runs an expression and renders OAP's `ExpressionResult` JSON.
/// `null_metric`: 9.5–9.7 leave `metric` null for unlabeled results.
pub fn execute(expression: &str, src: &dyn Source, null_metric: bool) -> Json {
    let err = |msg: String| json!({"type": "UNKNOWN", "results": [], "error": msg, "debuggingTrace": null});
    let ast = match parse(expression) {
        Ok(a) => a,
        Err(e) => return err(e),
    };
    let val = match eval(&ast, src) {
        Ok(v) => v,
        Err(FetchError::InvalidEntity) => {
            let ty = if top_is_single(&ast) {
                "SINGLE_VALUE"
            } else {
                "UNKNOWN"
            };
            return json!({"type": ty, "results": [], "error": null, "debuggingTrace": null});
        }
        Err(e) => return err(e.to_string()),
    };
    let (single, list) = match val {
        Val::Scalar(x) => (
            true,
            vec![Series {
                labels: vec![],
                points: vec![(None, Some(x))],
            }],
        ),
        Val::Series { single, list } => (single, list),
    };
    let results: Vec<Json> = list
        .into_iter()
        .map(|s| {
            let metric = if s.labels.is_empty() && null_metric {
                Json::Null
            } else {
                let labels: Vec<Json> = s.labels.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
                json!({ "labels": labels })
            };
            let values: Vec<Json> = s
                .points
                .into_iter()
                .map(|(id, v)| json!({"id": id, "value": v.map(format_value), "traceID": null, "owner": null}))
                .collect();
            json!({"metric": metric, "values": values})
        })
        .collect();
    let ty = if single {
        "SINGLE_VALUE"
    } else {
        "TIME_SERIES_VALUES"
    };
    json!({"type": ty, "results": results, "error": null, "debuggingTrace": null})
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Source for Fixed {
        fn fetch(&self, metric: &str, _sel: Option<&Selector>) -> Result<Vec<Series>, FetchError> {
            match metric {
                "m" => Ok(vec![Series {
                    labels: vec![],
                    points: vec![
                        (Some("1".into()), Some(2.0)),
                        (Some("2".into()), None),
                        (Some("3".into()), Some(4.0)),
                    ],
                }]),
                _ => Err(FetchError::UnknownMetric(metric.to_string())),
            }
        }
    }

    #[test]
    fn formats_like_decimal_format() {
        assert_eq!(format_value(9950.0), "9950");
        assert_eq!(format_value(0.995), "0.995");
        assert_eq!(format_value(0.0625), "0.062");
        assert_eq!(format_value(1.0 / 3.0), "0.333");
        assert_eq!(format_value(-5.0), "-5");
        assert_eq!(format_value(1e12), "1000000000000");
        assert_eq!(format_value(f64::INFINITY), "∞");
        assert_eq!(format_value(f64::NAN), "NaN");
    }

    #[test]
    fn evaluates_and_reports_errors() {
        let r = execute("avg(m) / 2", &Fixed, false);
        assert_eq!(r["type"], "SINGLE_VALUE");
        assert_eq!(r["results"][0]["values"][0]["value"], "1.5");
        let r = execute("m > 3", &Fixed, false);
        assert_eq!(r["results"][0]["values"][2]["value"], "1");
        assert_eq!(r["results"][0]["values"][1]["value"], Json::Null);
        let r = execute("latest(m)", &Fixed, false);
        assert_eq!(r["results"][0]["values"][0]["id"], "3");
        let r = execute("round(m / 3, 1)", &Fixed, false);
        assert_eq!(r["results"][0]["values"][0]["value"], "0.7");
        let r = execute("avg(m", &Fixed, false);
        assert!(
            r["error"].as_str().unwrap_or("").starts_with("line 1:5 "),
            "{r}"
        );
        let r = execute("nope", &Fixed, false);
        assert_eq!(r["error"], "Metric: [nope] does not exist.");
        let deep = format!("{}m{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(
            execute(&deep, &Fixed, false)["error"]
                .as_str()
                .is_some_and(|e| e.contains("too deeply"))
        );
        let r = execute("m $", &Fixed, false);
        assert_eq!(r["error"], "line 1:2 token recognition error at: '$'");
    }
}
