//! Triggers: which calls a mapping takes, written in the subset of
//! Segment's filter language (FQL) that users write for destinations, and
//! read the way Segment's Actions destinations read it
//! (`@segment/destination-subscriptions`), so a trigger copied from Segment
//! behaves the same here:
//!
//! * `path = value`, `!=`: compared as JavaScript's `String()` writes both
//!   sides (`properties.total = 10` matches `10` and `"10"`); `= null` means
//!   absent or null, `!= null` present and not null.
//! * `<`, `<=`, `>`, `>=`: compared as JavaScript's `Number()` reads both
//!   sides; a side that is no number never matches.
//! * `contains(path, "text")` and `match(path, "glob")` (`*`, `?`) hold only
//!   for strings, negated too: `!contains(path, "x")` is false for a number,
//!   as in Segment.
//! * On an `identify` or `group` call, `properties.…` reads `traits.…`, as
//!   Segment's destinations do.
//! * `and`, `or`, `not` (or `!`), parentheses, and `path in [v, …]`, which
//!   Segment's own parser lacks. `and` and `or` together need parentheses:
//!   Segment's parser gives a group the last conjunction it read, not the
//!   usual precedence, so an unbracketed mix would mean different things
//!   there and here.
//!
//! Strings take double or single quotes. A path is dot-separated names of
//! letters, digits, `_`, `-` and `$`; a backslash takes the next character
//! as it is (`properties.a\.b` is the key `a.b`).

use serde_json::Value;
use winnow::{
    ascii::multispace0,
    combinator::{alt, cut_err, delimited, fail, opt, preceded, separated, terminated},
    error::{ContextError, ErrMode, ModalResult, StrContext, StrContextValue},
    prelude::*,
    token::{any, one_of, take_while},
};

/// A parsed trigger; compares equal when the text is the same.
#[derive(Debug, Clone)]
pub struct Trigger {
    text: String,
    expr: Expr,
}

impl PartialEq for Trigger {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Trigger {}

/// Why a trigger could not be read: what was expected, and where (a byte
/// offset into the trigger's text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TriggerError {
    pub offset: usize,
    pub message: String,
}

/// How field paths are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// A Segment call: `properties.…` reads `traits.…` on identify and group.
    Segment,
    /// A LaunchDarkly event: paths as written (`kind`, `key`,
    /// `contextKeys.user`).
    LaunchDarkly,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    All(Vec<Expr>),
    Any(Vec<Expr>),
    Not(Box<Expr>),
    Compare(Path, Op, Literal),
    In(Path, Vec<Literal>),
    Contains(Path, String),
    Match(Path, String),
}

type Path = Vec<String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Number(f64),
    Bool(bool),
    Null,
}

impl std::str::FromStr for Trigger {
    type Err = TriggerError;

    fn from_str(text: &str) -> Result<Trigger, TriggerError> {
        let expr = delimited(multispace0, expression, multispace0)
            .parse(text)
            .map_err(|error| TriggerError {
                offset: error.offset(),
                message: describe(error.inner()),
            })?;
        Ok(Trigger {
            text: text.to_owned(),
            expr,
        })
    }
}

impl Trigger {
    /// The trigger as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `event` is one this trigger takes.
    pub fn matches(&self, event: &Value, dialect: Dialect) -> bool {
        evaluate(&self.expr, event, dialect)
    }
}

/// The parse error as one sentence: the innermost thing it names (what was
/// wrong, or what was expected there); the outer ones only repeat "a
/// condition".
fn describe(error: &ContextError) -> String {
    match error.context().next() {
        Some(StrContext::Label(label)) => (*label).to_owned(),
        Some(StrContext::Expected(value)) => format!("expected {value}"),
        _ => "expected a condition".to_owned(),
    }
}

fn expected(what: &'static str) -> StrContext {
    StrContext::Expected(StrContextValue::Description(what))
}

/// Conditions joined by one kind of conjunction.
fn expression(input: &mut &str) -> ModalResult<Expr> {
    let first = unary.parse_next(input)?;
    let mut joined = vec![first];
    let mut kind: Option<&str> = None;
    loop {
        let before = *input;
        let conjunction =
            opt(preceded(multispace0, alt((keyword("and"), keyword("or"))))).parse_next(input)?;
        let Some(conjunction) = conjunction else {
            break;
        };
        if kind.is_some_and(|kind| kind != conjunction) {
            *input = before;
            multispace0.parse_next(input)?;
            return cut_err(fail)
                .context(StrContext::Label(
                    "`and` and `or` together need parentheses, e.g. `a and (b or c)`",
                ))
                .parse_next(input);
        }
        kind = Some(conjunction);
        joined.push(
            cut_err(preceded(multispace0, unary))
                .context(expected("a condition"))
                .parse_next(input)?,
        );
    }
    Ok(match (kind, joined.len()) {
        (_, 1) => joined.remove(0),
        (Some("or"), _) => Expr::Any(joined),
        _ => Expr::All(joined),
    })
}

fn unary(input: &mut &str) -> ModalResult<Expr> {
    alt((
        preceded(
            (alt((keyword("not"), "!")), multispace0),
            cut_err(unary).context(expected("a condition")),
        )
        .map(|expr| Expr::Not(Box::new(expr))),
        delimited(
            ('(', multispace0),
            cut_err(expression),
            cut_err((multispace0, ')')).context(expected("`)`")),
        ),
        function,
        comparison,
    ))
    .context(expected("a condition"))
    .parse_next(input)
}

/// `contains(path, "text")` or `match(path, "glob")`.
fn function(input: &mut &str) -> ModalResult<Expr> {
    let name = terminated(
        alt((keyword("contains"), keyword("match"))),
        (multispace0, '('),
    )
    .parse_next(input)?;
    let (path, _, _, _, text, _, _) = cut_err((
        preceded(multispace0, path).context(expected("a field path")),
        multispace0,
        ','.context(expected("`,`")),
        multispace0,
        string.context(expected("a quoted string")),
        multispace0,
        ')'.context(expected("`)`")),
    ))
    .parse_next(input)?;
    Ok(if name == "contains" {
        Expr::Contains(path, text)
    } else {
        Expr::Match(path, text)
    })
}

/// `path op value` or `path in [values]`.
fn comparison(input: &mut &str) -> ModalResult<Expr> {
    let path = path.parse_next(input)?;
    multispace0.parse_next(input)?;
    if opt(keyword("in")).parse_next(input)?.is_some() {
        let values = cut_err(delimited(
            (multispace0, '[', multispace0),
            separated(1.., literal, (multispace0, ',', multispace0)),
            (multispace0, ']'),
        ))
        .context(expected("a list of values, e.g. `[\"a\", \"b\"]`"))
        .parse_next(input)?;
        return Ok(Expr::In(path, values));
    }
    let op = cut_err(alt((
        "!=".value(Op::Ne),
        "<=".value(Op::Le),
        ">=".value(Op::Ge),
        "=".value(Op::Eq),
        "<".value(Op::Lt),
        ">".value(Op::Gt),
    )))
    .context(expected("=, !=, <, <=, >, >= or in"))
    .parse_next(input)?;
    // A missing value is reported where it should start, not past the
    // whitespace (a newline, in a multi-line trigger) after the operator.
    let after_op = *input;
    let value = match preceded(multispace0, literal).parse_next(input) {
        Ok(value) => value,
        Err(ErrMode::Backtrack(_)) => {
            *input = after_op;
            return cut_err(fail)
                .context(expected(
                    "a value (a quoted string, a number, true, false or null)",
                ))
                .parse_next(input);
        }
        Err(error) => return Err(error),
    };
    Ok(Expr::Compare(path, op, value))
}

fn literal(input: &mut &str) -> ModalResult<Literal> {
    alt((
        string.map(Literal::Text),
        number.map(Literal::Number),
        keyword("true").value(Literal::Bool(true)),
        keyword("false").value(Literal::Bool(false)),
        keyword("null").value(Literal::Null),
    ))
    .parse_next(input)
}

fn number(input: &mut &str) -> ModalResult<f64> {
    take_while(1.., |c: char| {
        c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')
    })
    .verify(|text: &str| text.starts_with(|c: char| c.is_ascii_digit() || c == '-'))
    .try_map(str::parse::<f64>)
    .parse_next(input)
}

/// A string in double or single quotes; a backslash takes the next
/// character as it is (`\n` and `\t` are a newline and a tab).
fn string(input: &mut &str) -> ModalResult<String> {
    let quote = one_of(['"', '\'']).parse_next(input)?;
    let mut text = String::new();
    loop {
        match cut_err(any)
            .context(expected("a closing quote"))
            .parse_next(input)?
        {
            c if c == quote => return Ok(text),
            '\\' => match cut_err(any)
                .context(expected("a character after `\\`"))
                .parse_next(input)?
            {
                'n' => text.push('\n'),
                't' => text.push('\t'),
                c => text.push(c),
            },
            c => text.push(c),
        }
    }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$')
}

/// One name of a path: name characters, or any character after `\`.
fn name(input: &mut &str) -> ModalResult<String> {
    let mut name = String::new();
    loop {
        if let Some(part) = opt(take_while(1.., name_char)).parse_next(input)? {
            name.push_str(part);
        } else if opt('\\').parse_next(input)?.is_some() {
            name.push(
                cut_err(any)
                    .context(expected("a character after `\\`"))
                    .parse_next(input)?,
            );
        } else {
            break;
        }
    }
    if name.is_empty() {
        return fail.parse_next(input);
    }
    Ok(name)
}

fn path(input: &mut &str) -> ModalResult<Path> {
    let path: Path = separated(1.., name, '.').parse_next(input)?;
    // A keyword is not a field (`not`, `and` … where a path was expected).
    if path.len() == 1
        && ["and", "or", "not", "in", "true", "false", "null"].contains(&path[0].as_str())
    {
        return Err(ErrMode::Backtrack(ContextError::new()));
    }
    Ok(path)
}

/// `word`, not followed by a name character (`order` is not `or`).
fn keyword<'i>(word: &'static str) -> impl Parser<&'i str, &'i str, ErrMode<ContextError>> {
    terminated(word, winnow::combinator::not(one_of(name_char)))
}

fn evaluate(expr: &Expr, event: &Value, dialect: Dialect) -> bool {
    match expr {
        Expr::All(all) => all.iter().all(|expr| evaluate(expr, event, dialect)),
        Expr::Any(any) => any.iter().any(|expr| evaluate(expr, event, dialect)),
        // As Segment: a negated function still needs a string.
        Expr::Not(inner) => match inner.as_ref() {
            Expr::Contains(path, _) | Expr::Match(path, _) => {
                resolve(event, path, dialect).is_some_and(Value::is_string)
                    && !evaluate(inner, event, dialect)
            }
            inner => !evaluate(inner, event, dialect),
        },
        Expr::Compare(path, op, literal) => compare(resolve(event, path, dialect), *op, literal),
        Expr::In(path, literals) => {
            let actual = resolve(event, path, dialect);
            literals
                .iter()
                .any(|literal| compare(actual, Op::Eq, literal))
        }
        Expr::Contains(path, needle) => resolve(event, path, dialect)
            .and_then(Value::as_str)
            .is_some_and(|text| text.contains(needle.as_str())),
        Expr::Match(path, pattern) => resolve(event, path, dialect)
            .and_then(Value::as_str)
            .is_some_and(|text| wildmatch::WildMatch::new(pattern).matches(text)),
    }
}

fn resolve<'v>(event: &'v Value, path: &Path, dialect: Dialect) -> Option<&'v Value> {
    let mut names = path.iter().map(String::as_str);
    let first = names.next()?;
    let traits_for_properties = dialect == Dialect::Segment
        && first == "properties"
        && matches!(
            event.get("type").and_then(Value::as_str),
            Some("identify" | "group")
        );
    let first = if traits_for_properties {
        "traits"
    } else {
        first
    };
    let mut value = event.get(first)?;
    for name in names {
        value = match value {
            Value::Object(map) => map.get(name)?,
            Value::Array(items) => items.get(name.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn compare(actual: Option<&Value>, op: Op, literal: &Literal) -> bool {
    match (op, literal) {
        (Op::Eq, Literal::Null) => actual.is_none_or(Value::is_null),
        (Op::Ne, Literal::Null) => actual.is_some_and(|value| !value.is_null()),
        (Op::Eq, literal) => same_text(actual, literal),
        (Op::Ne, literal) => !same_text(actual, literal),
        (op, literal) => {
            let (left, right) = (js_number(actual), literal_number(literal));
            match op {
                Op::Lt => left < right,
                Op::Le => left <= right,
                Op::Gt => left > right,
                _ => left >= right,
            }
        }
    }
}

/// `String(actual) === String(literal)`, without writing either out when
/// both are strings (the usual trigger: `event = "Order Completed"`).
fn same_text(actual: Option<&Value>, literal: &Literal) -> bool {
    match (actual, literal) {
        (Some(Value::String(actual)), Literal::Text(text)) => actual == text,
        (actual, literal) => js_string(actual) == literal_string(literal),
    }
}

/// JavaScript's `String(value)` (`undefined` when absent).
fn js_string(value: Option<&Value>) -> String {
    match value {
        None => "undefined".to_owned(),
        Some(Value::Null) => "null".to_owned(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => js_number_text(n.as_f64().unwrap_or(f64::NAN)),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::Null => String::new(),
                item => js_string(Some(item)),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(_)) => "[object Object]".to_owned(),
    }
}

fn literal_string(literal: &Literal) -> String {
    match literal {
        Literal::Text(text) => text.clone(),
        Literal::Number(n) => js_number_text(*n),
        Literal::Bool(b) => b.to_string(),
        Literal::Null => "null".to_owned(),
    }
}

fn js_number_text(n: f64) -> String {
    ryu_js::Buffer::new().format(n).to_owned()
}

/// JavaScript's `Number(value)` (NaN when absent or not a number).
fn js_number(value: Option<&Value>) -> f64 {
    match value {
        None => f64::NAN,
        Some(Value::Null) => 0.0,
        Some(Value::Bool(b)) => f64::from(u8::from(*b)),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => text_number(s),
        Some(_) => f64::NAN,
    }
}

/// JavaScript's `Number(text)`: blank is 0, the rest NaN unless numeric.
fn text_number(text: &str) -> f64 {
    match text.trim() {
        "" => 0.0,
        text => text.parse().unwrap_or(f64::NAN),
    }
}

fn literal_number(literal: &Literal) -> f64 {
    match literal {
        Literal::Text(text) => text_number(text),
        Literal::Number(n) => *n,
        Literal::Bool(b) => f64::from(u8::from(*b)),
        Literal::Null => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn takes(trigger: &str, event: &Value) -> bool {
        let trigger: Trigger = trigger
            .parse()
            .unwrap_or_else(|error| panic!("{trigger}: {error:?}"));
        trigger.matches(event, Dialect::Segment)
    }

    fn error(trigger: &str) -> TriggerError {
        trigger.parse::<Trigger>().expect_err(trigger)
    }

    fn clicked() -> Value {
        json!({
            "event": "Button Clicked",
            "type": "track",
            "context": {"library": {"name": "analytics.js", "version": "1.0"}},
            "properties": {"total": 10, "features": ["discounts", "dark-mode"], "a.b": 1, "note": null}
        })
    }

    #[test]
    fn segments_documented_examples_evaluate_as_segment_says() {
        let event = clicked();
        for (trigger, expected) in [
            ("event = 'Button Clicked'", true),
            ("event = 'Screen Tapped'", false),
            ("context.path.path = '/login'", false),
            ("type = 'identify' or type = 'track'", true),
            ("event = 'Button Clicked' and type = 'track'", true),
            ("match( context.library.version, '1.*' )", true),
            ("match( context.library.version, '2.*' )", false),
            (
                "type = 'track' and ( event = 'Click' or match( event, 'Button *' ) )",
                true,
            ),
            ("!contains( context.library.name, 'js' )", false),
            (r#"type = "track" and event = "Button Clicked""#, true),
        ] {
            assert_eq!(takes(trigger, &event), expected, "{trigger}");
        }
    }

    #[test]
    fn values_compare_as_javascript_writes_and_reads_them() {
        let event = clicked();
        for (trigger, expected) in [
            ("properties.total = 10", true),
            (r#"properties.total = "10""#, true),
            ("properties.total = 10.0", true),
            ("properties.total != 10", false),
            ("properties.total > 9.5", true),
            (r#"properties.total < "11""#, true),
            ("properties.total >= 11", false),
            (r#"event > 1"#, false),
            (r#"properties.missing != "x""#, true),
            ("properties.missing = null", true),
            ("properties.note = null", true),
            ("properties.note != null", false),
            ("properties.total != null", true),
            (r#"properties.features = "discounts,dark-mode""#, true),
            (r#"properties.features.1 = "dark-mode""#, true),
            (r#"properties.a\.b = 1"#, true),
            (r#"event in ["Signed Up", "Button Clicked"]"#, true),
            ("properties.total in [1, 10]", true),
            (r#"event in ["Signed Up"]"#, false),
        ] {
            assert_eq!(takes(trigger, &event), expected, "{trigger}");
        }
    }

    #[test]
    fn functions_hold_only_for_strings_negated_too() {
        let event = clicked();
        for (trigger, expected) in [
            (r#"contains(event, "Click")"#, true),
            (r#"contains(properties.total, "1")"#, false),
            (r#"!contains(properties.total, "1")"#, false),
            (r#"not contains(event, "Tap")"#, true),
            (r#"!match(event, "Button*")"#, false),
            (r#"match(event, "*Clicked")"#, true),
            (r#"match(event, "B?tton*")"#, true),
            (r#"not (type = "identify")"#, true),
            (r#"not type = "track""#, false),
        ] {
            assert_eq!(takes(trigger, &event), expected, "{trigger}");
        }
    }

    #[test]
    fn properties_read_traits_on_identify_and_group_for_segment_only() {
        let identify = json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}});
        let trigger: Trigger = r#"properties.plan = "pro""#.parse().unwrap();
        assert!(trigger.matches(&identify, Dialect::Segment));
        assert!(!trigger.matches(&identify, Dialect::LaunchDarkly));
        let track = json!({"type": "track", "traits": {"plan": "pro"}});
        assert!(!trigger.matches(&track, Dialect::Segment));
    }

    #[test]
    fn launchdarkly_events_filter_by_kind_flag_key_and_context_keys() {
        let trigger: Trigger =
            r#"kind = "custom" or (kind = "feature" and key in ["new-checkout", "pricing-v2"])"#
                .parse()
                .unwrap();
        let feature =
            |key: &str| json!({"kind": "feature", "key": key, "contextKeys": {"user": "u1"}});
        assert!(trigger.matches(&feature("new-checkout"), Dialect::LaunchDarkly));
        assert!(!trigger.matches(&feature("old-banner"), Dialect::LaunchDarkly));
        assert!(trigger.matches(
            &json!({"kind": "custom", "key": "x"}),
            Dialect::LaunchDarkly
        ));
        assert!(!trigger.matches(&json!({"kind": "identify"}), Dialect::LaunchDarkly));
        let by_context: Trigger = r#"contextKeys.user = "u1""#.parse().unwrap();
        assert!(by_context.matches(&feature("k"), Dialect::LaunchDarkly));
    }

    #[test]
    fn keywords_end_at_a_name_boundary() {
        let event = json!({"order": 1, "android": "yes", "nothing": true, "type": "track"});
        assert!(takes("order = 1", &event));
        assert!(takes(r#"android = "yes" and nothing = true"#, &event));
        assert!(takes(r#"type="track"and order=1"#, &event));
    }

    #[test]
    fn mistakes_are_reported_with_what_was_expected_and_where() {
        let mixed = error(r#"type = "track" and event = "A" or event = "B""#);
        assert_eq!(mixed.offset, 31);
        assert!(mixed.message.contains("parentheses"), "{mixed:?}");
        let no_value = error("event =");
        assert_eq!(no_value.offset, 7);
        assert!(no_value.message.contains("a value"), "{no_value:?}");
        let no_operator = error(r#"event "A""#);
        assert_eq!(no_operator.offset, 6);
        assert!(no_operator.message.contains("!="), "{no_operator:?}");
        let unclosed = error(r#"event = "A"#);
        assert_eq!(unclosed.offset, 10);
        assert!(unclosed.message.contains("closing quote"), "{unclosed:?}");
        let paren = error(r#"(type = "track""#);
        assert!(paren.message.contains("`)`"), "{paren:?}");
        let list = error("key in []");
        assert!(list.message.contains("list of values"), "{list:?}");
        assert!(error("").offset == 0);
        assert!(error(r#"type = "track" and"#).message.contains("condition"));
        let comma = error(r#"contains(event "A")"#);
        assert_eq!((comma.offset, comma.message.as_str()), (15, "expected `,`"));
        let unquoted = error("type = track");
        assert_eq!(unquoted.offset, 6);
        assert!(unquoted.message.contains("quoted string"), "{unquoted:?}");
    }

    #[test]
    fn triggers_compare_by_their_text() {
        let a: Trigger = r#"type = "track""#.parse().unwrap();
        let b: Trigger = r#"type = "track""#.parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.text(), r#"type = "track""#);
    }
}
