//! Visibility you can query: the search attributes a workflow sets (checked here), and the
//! small query language of `ListWorkflows` (`customer = "c42" AND status = "running" AND
//! started > "2026-12-01"`), parsed into a [`Filter`] the store turns into SQL with bound
//! values. A query that does not parse is refused with the position of what is wrong.

use crate::clock::Millis;
use crate::error::EngineError;
use martix_proto::v1 as pb;
use std::collections::HashMap;

/// Most search attributes a run may have.
pub const MAX_ATTRIBUTES: usize = 20;
/// The longest keyword value.
pub const MAX_KEYWORD_BYTES: usize = 256;
/// The longest query.
pub const MAX_QUERY_BYTES: usize = 1_000;
/// Most comparisons in a query.
pub const MAX_COMPARISONS: usize = 20;

/// The fields every run has, by their query names; a search attribute may not take one.
const BUILT_IN: [&str; 6] = [
    "workflow_id",
    "workflow_type",
    "task_queue",
    "status",
    "started",
    "closed",
];

/// How a search attribute's value is stored (`search_attributes.kind`).
pub const KIND_KEYWORD: i16 = 1;
pub const KIND_INT: i16 = 2;
pub const KIND_TIME: i16 = 3;

/// A stored value: its kind, its text (keywords) and its number (ints, times in ms).
pub fn stored(v: &pb::SearchAttributeValue) -> (i16, Option<String>, Option<i64>) {
    use pb::search_attribute_value::Value;
    match &v.value {
        Some(Value::Keyword(k)) => (KIND_KEYWORD, Some(k.clone()), None),
        Some(Value::Int(i)) => (KIND_INT, None, Some(*i)),
        Some(Value::Time(t)) => (KIND_TIME, None, Some(crate::clock::from_timestamp(t))),
        None => (KIND_KEYWORD, None, None),
    }
}

/// Checks attributes a workflow sets, given those its run has: names, values, how many.
pub fn check_attributes(
    new: &HashMap<String, pb::SearchAttributeValue>,
    has: &HashMap<String, pb::SearchAttributeValue>,
) -> Result<(), String> {
    use pb::search_attribute_value::Value;
    if new.is_empty() {
        return Err("attributes must not be empty".into());
    }
    for (name, v) in new {
        check_name(name)?;
        match &v.value {
            None => return Err(format!("search attribute '{name}' has no value")),
            Some(Value::Keyword(k)) if k.len() > MAX_KEYWORD_BYTES => {
                return Err(format!(
                    "search attribute '{name}' is {} bytes, at most {MAX_KEYWORD_BYTES}",
                    k.len()
                ));
            }
            Some(Value::Keyword(k)) if k.chars().any(char::is_control) => {
                return Err(format!(
                    "search attribute '{name}' must not hold control characters"
                ));
            }
            _ => {}
        }
    }
    let total = has.len() + new.keys().filter(|k| !has.contains_key(*k)).count();
    if total > MAX_ATTRIBUTES {
        return Err(format!(
            "the run would have {total} search attributes, at most {MAX_ATTRIBUTES}"
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        return Err(format!(
            "search attribute name '{name}' must be 1 to 64 letters, digits and '_', not \
             starting with a digit"
        ));
    }
    if BUILT_IN.contains(&name) {
        return Err(format!(
            "search attribute name '{name}' is a built-in field's"
        ));
    }
    Ok(())
}

/// A parsed query.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Compare(Field, Cmp, Value),
}

/// What a comparison looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    WorkflowId,
    WorkflowType,
    TaskQueue,
    Status,
    Started,
    Closed,
    Attribute(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    /// The operator in SQL.
    pub fn sql(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "<>",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

/// What a field is compared with, checked against the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Int(i64),
    /// A status, as stored.
    Status(i32),
    Time(Millis),
    /// A quoted value compared with a search attribute: a keyword, or, if it reads as a time,
    /// a time attribute too.
    TextOrTime(String, Option<Millis>),
}

/// Parses a query; the error names the position (1-based, in characters) of what is wrong.
pub fn parse(query: &str) -> Result<Filter, EngineError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(EngineError::invalid(
            "query",
            format!("is {} bytes, at most {MAX_QUERY_BYTES}", query.len()),
        ));
    }
    let tokens = lex(query)?;
    let mut p = Parser {
        tokens,
        at: 0,
        comparisons: 0,
        end: query.chars().count() + 1,
    };
    let f = p.or()?;
    if let Some((pos, t)) = p.tokens.get(p.at) {
        return Err(error(*pos, format!("unexpected {}", t.describe())));
    }
    Ok(f)
}

fn error(pos: usize, what: String) -> EngineError {
    EngineError::invalid("query", format!("at position {pos}: {what}"))
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Int(i64),
    Op(Cmp),
    Open,
    Close,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word(w) => format!("'{w}'"),
            Token::Text(t) => format!("\"{t}\""),
            Token::Int(i) => i.to_string(),
            Token::Op(c) => format!("'{}'", c.sql()),
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
        }
    }
}

fn lex(q: &str) -> Result<Vec<(usize, Token)>, EngineError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((pos, Token::Open));
                i += 1;
            }
            ')' => {
                out.push((pos, Token::Close));
                i += 1;
            }
            '"' | '\'' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(error(
                                pos,
                                format!("a text opened with {c} is never closed"),
                            ));
                        }
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(&x) => {
                            text.push(x);
                            i += 1;
                        }
                    }
                }
                out.push((pos, Token::Text(text)));
            }
            '=' => {
                out.push((pos, Token::Op(Cmp::Eq)));
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push((pos, Token::Op(Cmp::Ne)));
                i += 2;
            }
            '<' => match chars.get(i + 1) {
                Some('=') => {
                    out.push((pos, Token::Op(Cmp::Le)));
                    i += 2;
                }
                Some('>') => {
                    out.push((pos, Token::Op(Cmp::Ne)));
                    i += 2;
                }
                _ => {
                    out.push((pos, Token::Op(Cmp::Lt)));
                    i += 1;
                }
            },
            '>' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push((pos, Token::Op(Cmp::Ge)));
                    i += 2;
                } else {
                    out.push((pos, Token::Op(Cmp::Gt)));
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                i += 1;
                while chars.get(i).is_some_and(char::is_ascii_digit) {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = text
                    .parse()
                    .map_err(|_| error(pos, format!("{text} is not a 64-bit integer")))?;
                out.push((pos, Token::Int(n)));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                out.push((pos, Token::Word(chars[start..i].iter().collect())));
            }
            other => return Err(error(pos, format!("'{other}' is not part of a query"))),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    comparisons: usize,
    end: usize,
}

impl Parser {
    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.tokens.get(self.at), Some((_, Token::Word(w))) if w.eq_ignore_ascii_case(kw))
    }

    fn next(&mut self, expected: &str) -> Result<(usize, Token), EngineError> {
        let t = self
            .tokens
            .get(self.at)
            .cloned()
            .ok_or_else(|| error(self.end, format!("expected {expected}, the query ended")))?;
        self.at += 1;
        Ok(t)
    }

    fn or(&mut self) -> Result<Filter, EngineError> {
        let mut left = self.and()?;
        while self.peek_keyword("or") {
            self.at += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, EngineError> {
        let mut left = self.term()?;
        while self.peek_keyword("and") {
            self.at += 1;
            left = Filter::And(Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Filter, EngineError> {
        let (pos, t) = self.next("a field or '('")?;
        match t {
            Token::Open => {
                let inner = self.or()?;
                match self.next("')'")? {
                    (_, Token::Close) => Ok(inner),
                    (p, other) => Err(error(
                        p,
                        format!("expected ')', found {}", other.describe()),
                    )),
                }
            }
            Token::Word(name) => {
                self.comparisons += 1;
                if self.comparisons > MAX_COMPARISONS {
                    return Err(error(
                        pos,
                        format!("a query has at most {MAX_COMPARISONS} comparisons"),
                    ));
                }
                let cmp = match self.next("an operator (= != < <= > >=)")? {
                    (_, Token::Op(c)) => c,
                    (p, other) => {
                        return Err(error(
                            p,
                            format!(
                                "expected an operator (= != < <= > >=) after '{name}', found {}",
                                other.describe()
                            ),
                        ));
                    }
                };
                let (vpos, value) = self.next("a value")?;
                compare(&name, pos, cmp, vpos, value)
            }
            other => Err(error(
                pos,
                format!("expected a field or '(', found {}", other.describe()),
            )),
        }
    }
}

/// A comparison of field `name` with a value, checked: the value's type must suit the field.
fn compare(
    name: &str,
    pos: usize,
    cmp: Cmp,
    vpos: usize,
    value: Token,
) -> Result<Filter, EngineError> {
    let field = match name.to_ascii_lowercase().as_str() {
        "workflow_id" => Field::WorkflowId,
        "workflow_type" => Field::WorkflowType,
        "task_queue" => Field::TaskQueue,
        "status" => Field::Status,
        "started" => Field::Started,
        "closed" => Field::Closed,
        _ => {
            check_name(name).map_err(|e| error(pos, e))?;
            Field::Attribute(name.to_owned())
        }
    };
    let text = |v: &Token| match v {
        Token::Text(t) => Ok(t.clone()),
        other => Err(error(
            vpos,
            format!(
                "'{name}' is compared with text (\"...\"), not {}",
                other.describe()
            ),
        )),
    };
    let value = match &field {
        Field::WorkflowId | Field::WorkflowType | Field::TaskQueue => Value::Text(text(&value)?),
        Field::Status => {
            if !matches!(cmp, Cmp::Eq | Cmp::Ne) {
                return Err(error(pos, "'status' takes = or != only".into()));
            }
            let s = text(&value)?;
            let wanted = format!("WORKFLOW_STATUS_{}", s.to_ascii_uppercase());
            let status = pb::WorkflowStatus::from_str_name(&wanted)
                .filter(|s| *s != pb::WorkflowStatus::Unspecified)
                .ok_or_else(|| {
                    error(
                        vpos,
                        format!(
                            "'{s}' is not a status (running, completed, failed, canceled, \
                             terminated, continued_as_new, timed_out, compensated)"
                        ),
                    )
                })?;
            Value::Status(status as i32)
        }
        Field::Started | Field::Closed => {
            let s = text(&value)?;
            Value::Time(time(&s).ok_or_else(|| {
                error(
                    vpos,
                    format!("\"{s}\" is not a time (\"2026-12-01\" or RFC 3339)"),
                )
            })?)
        }
        Field::Attribute(_) => match value {
            Token::Int(i) => Value::Int(i),
            Token::Text(t) => {
                let at = time(&t);
                Value::TextOrTime(t, at)
            }
            other => {
                return Err(error(
                    vpos,
                    format!("expected a value, found {}", other.describe()),
                ));
            }
        },
    };
    Ok(Filter::Compare(field, cmp, value))
}

/// A time as a query gives it: a date (midnight UTC) or RFC 3339.
fn time(s: &str) -> Option<Millis> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(field: Field, c: Cmp, v: Value) -> Filter {
        Filter::Compare(field, c, v)
    }

    #[test]
    fn the_issue_example_parses_with_and_binding_tighter_than_or() {
        let f =
            parse(r#"customer = "c42" AND status = "running" AND started > "2026-12-01""#).unwrap();
        let customer = cmp(
            Field::Attribute("customer".into()),
            Cmp::Eq,
            Value::TextOrTime("c42".into(), None),
        );
        let running = cmp(
            Field::Status,
            Cmp::Eq,
            Value::Status(pb::WorkflowStatus::Running as i32),
        );
        let started = cmp(Field::Started, Cmp::Gt, Value::Time(1_796_083_200_000));
        assert_eq!(
            f,
            Filter::And(
                Box::new(Filter::And(
                    Box::new(customer.clone()),
                    Box::new(running.clone())
                )),
                Box::new(started)
            )
        );
        let g = parse("total >= 100 or (customer != 'c1' and status = 'failed')").unwrap();
        assert!(matches!(g, Filter::Or(_, _)));
        let Filter::Or(l, _) = g else { unreachable!() };
        assert_eq!(
            *l,
            cmp(Field::Attribute("total".into()), Cmp::Ge, Value::Int(100))
        );
    }

    #[test]
    fn a_bad_query_names_the_position_and_why() {
        let bad = |q: &str, want: &str| {
            let e = parse(q).unwrap_err().to_string();
            assert!(e.contains(want), "{q}: {e} lacks {want}");
        };
        bad(
            r#"customer = "c42" AND"#,
            "at position 21: expected a field or '(', the query ended",
        );
        bad(r#"customer "c42""#, "at position 10: expected an operator");
        bad(r#"status > "running""#, "'status' takes = or != only");
        bad(
            r#"status = "sleeping""#,
            "at position 10: 'sleeping' is not a status",
        );
        bad(r#"started > "yesterday""#, "is not a time");
        bad(
            r#"customer = "c42"#,
            "at position 12: a text opened with \" is never closed",
        );
        bad(r#"(customer = "c42""#, "expected ')', the query ended");
        bad(
            r#"customer = "c42" extra"#,
            "at position 18: unexpected 'extra'",
        );
        bad("customer ~ 1", "at position 10: '~' is not part of a query");
        bad("workflow_id = 5", "'workflow_id' is compared with text");
        bad("9lives = 1", "at position 1");
        let many = vec!["a = 1"; 21].join(" and ");
        bad(&many, "at most 20 comparisons");
    }

    #[test]
    fn attributes_are_checked_by_name_value_and_count() {
        let kw = |s: &str| pb::SearchAttributeValue {
            value: Some(pb::search_attribute_value::Value::Keyword(s.into())),
        };
        let one = |k: &str, v| HashMap::from([(k.to_owned(), v)]);
        assert!(check_attributes(&one("customer", kw("c42")), &HashMap::new()).is_ok());
        for (name, why) in [
            ("status", "built-in"),
            ("bad-name", "letters, digits and '_'"),
            ("", "1 to 64"),
        ] {
            let e = check_attributes(&one(name, kw("x")), &HashMap::new()).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let long =
            check_attributes(&one("note", kw(&"x".repeat(257))), &HashMap::new()).unwrap_err();
        assert!(long.contains("at most 256"), "{long}");
        let has: HashMap<_, _> = (0..20).map(|i| (format!("a{i}"), kw("x"))).collect();
        assert!(
            check_attributes(&one("a3", kw("y")), &has).is_ok(),
            "replacing one"
        );
        let e = check_attributes(&one("a20", kw("y")), &has).unwrap_err();
        assert!(e.contains("21 search attributes, at most 20"), "{e}");
    }
}
