//! The ECS cluster query language of `memberOf` constraints.
//!
//! ```text
//! expression := term (('or' | '||') term)*
//! term       := factor (('and' | '&&') factor)*
//! factor     := ('not' | '!') factor | '(' expression ')' | condition
//! condition  := subject operator [argument]
//! subject    := 'attribute:' name | 'task:group' | 'agentConnected'
//!             | 'agentVersion' | 'ec2InstanceId' | 'registeredAt'
//!             | 'runningTasksCount'
//! argument   := value | '[' value (',' value)* ']'
//! ```
//!
//! Values are bare words (`t2.micro`, `us-east-1a`, `service:web`) or quoted
//! strings. `=~` and `!~` take a regular expression matched against the
//! whole value, so `t2.*` matches `t2.micro`. On a missing attribute the
//! positive operators (`==`, `>`, `in`, `=~`, ...) are false and their
//! negations true. `task:group` asks about the tasks on an instance:
//! `task:group == web` holds where a task of group `web` runs, and
//! `task:group != web` where none does.
//!
//! The other subjects are facts of one instance, each with the operators
//! ECS allows it: `agentConnected` (`true`/`false`) and `ec2InstanceId`
//! (the instance's name) take `==`, `!=`, `in`, `not_in`, `=~`, `!~`;
//! `agentVersion` (compared part by part, so `1.10.0 > 1.9.2`),
//! `registeredAt` (an RFC 3339 time, or a date compared by day) and
//! `runningTasksCount` (a number) take `==`, `!=`, `>`, `>=`, `<`, `<=`.

use std::{cmp::Ordering, fmt};

use k8s_openapi::jiff::{Timestamp, civil::Date, tz::TimeZone};
use regex::Regex;

/// An expression that failed to parse: where, what was expected, what was
/// found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at column {column}: expected {expected}, found {found}")]
pub struct ParseError {
    /// 1-based character column of the offending token.
    pub column: usize,
    pub expected: String,
    pub found: String,
}

/// A parsed expression, with its source text for messages.
#[derive(Clone, Debug)]
pub struct Query {
    source: String,
    expr: Expr,
}

impl PartialEq for Query {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Query {}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// What an expression is evaluated against: one container instance.
pub trait InstanceView {
    /// The value of attribute `name`, if the instance has it.
    fn attribute(&self, name: &str) -> Option<&str>;
    /// Whether some task on the instance has a group satisfying `pred`.
    fn any_task_group(&self, pred: &mut dyn FnMut(&str) -> bool) -> bool;
    /// A fact of the instance itself, as text (`true`, `1.2.0`, an RFC
    /// 3339 time, a count); `None` when it has none (no agent version
    /// reported). A set of attributes alone has no facts.
    fn fact(&self, fact: Fact) -> Option<String>;
}

/// The subjects that are facts of one instance rather than attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    AgentConnected,
    AgentVersion,
    Ec2InstanceId,
    RegisteredAt,
    RunningTasksCount,
}

impl Fact {
    fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "agentConnected" => Self::AgentConnected,
            "agentVersion" => Self::AgentVersion,
            "ec2InstanceId" => Self::Ec2InstanceId,
            "registeredAt" => Self::RegisteredAt,
            "runningTasksCount" => Self::RunningTasksCount,
            _ => return None,
        })
    }

    /// Whether the fact is ordered (`>`, `<`, ...) rather than matched
    /// (`in`, `=~`, ...): ECS gives each subject one of the two sets.
    fn ordered(self) -> bool {
        matches!(
            self,
            Self::AgentVersion | Self::RegisteredAt | Self::RunningTasksCount
        )
    }

    fn operators(self) -> &'static str {
        if self.ordered() {
            "an operator (==, !=, >, >=, <, <=)"
        } else {
            "an operator (==, !=, in, not_in, =~, !~)"
        }
    }

    fn takes(self, operator: Operator) -> bool {
        use Operator as O;
        if self.ordered() {
            matches!(operator, O::Eq | O::Ne | O::Gt | O::Ge | O::Lt | O::Le)
        } else {
            matches!(
                operator,
                O::Eq | O::Ne | O::In | O::NotIn | O::Matches | O::NotMatches
            )
        }
    }

    /// How two values of the fact compare; `None` when they do not.
    fn order(self, value: &str, argument: &str) -> Option<Ordering> {
        match self {
            Self::AgentVersion => Some(version_order(value, argument)),
            Self::RegisteredAt => {
                let at: Timestamp = value.parse().ok()?;
                match Moment::parse(argument)? {
                    Moment::Instant(t) => Some(at.cmp(&t)),
                    Moment::Day(day) => Some(at.to_zoned(TimeZone::UTC).date().cmp(&day)),
                }
            }
            Self::RunningTasksCount => Some(order(value, argument)),
            Self::AgentConnected | Self::Ec2InstanceId => Some(value.cmp(argument)),
        }
    }
}

/// A `registeredAt` argument: a time, or a whole day.
enum Moment {
    Instant(Timestamp),
    Day(Date),
}

impl Moment {
    fn parse(text: &str) -> Option<Self> {
        text.parse()
            .map(Self::Instant)
            .ok()
            .or_else(|| text.parse().ok().map(Self::Day))
    }
}

/// Versions compare by their dot-separated parts, numerically where both
/// parts are numbers.
fn version_order(a: &str, b: &str) -> Ordering {
    let parts = |v: &str| {
        v.trim_start_matches('v')
            .split('.')
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (a, b) = (parts(a), parts(b));
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).map_or("0", String::as_str);
        let y = b.get(i).map_or("0", String::as_str);
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

impl Query {
    /// Parse an expression.
    ///
    /// # Errors
    /// The first token that does not fit the grammar.
    pub fn parse(source: &str) -> Result<Self, ParseError> {
        let tokens = lex(source)?;
        let mut parser = Parser {
            tokens,
            next: 0,
            end_column: source.chars().count() + 1,
        };
        let expr = parser.expression()?;
        if let Some(token) = parser.peek() {
            return Err(ParseError {
                column: token.column,
                expected: "'and', 'or' or the end of the expression".into(),
                found: token.describe(),
            });
        }
        Ok(Self {
            source: source.to_owned(),
            expr,
        })
    }

    /// The text the query was parsed from.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression looks at more than attributes (the tasks of
    /// `task:group`, or a fact of the instance), so that it must be
    /// evaluated per instance rather than per attribute set.
    #[must_use]
    pub fn per_instance(&self) -> bool {
        self.expr.per_instance()
    }

    /// Whether `instance` satisfies the expression.
    #[must_use]
    pub fn matches(&self, instance: &dyn InstanceView) -> bool {
        self.expr.eval(instance)
    }
}

#[derive(Clone, Debug)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Condition(Condition),
}

#[derive(Clone, Debug)]
struct Condition {
    subject: Subject,
    operator: Operator,
    argument: Argument,
}

#[derive(Clone, Debug)]
enum Subject {
    Attribute(String),
    TaskGroup,
    Fact(Fact),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
}

#[derive(Clone, Debug)]
enum Argument {
    None,
    Value(String),
    List(Vec<String>),
    Pattern(Regex),
}

impl Operator {
    const EXPECTED: &'static str =
        "an operator (==, !=, >, >=, <, <=, exists, !exists, in, not_in, =~, !~)";

    fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "==" | "equals" => Self::Eq,
            "!=" | "not_equals" => Self::Ne,
            ">" | "greater_than" => Self::Gt,
            ">=" | "greater_than_equal" => Self::Ge,
            "<" | "less_than" => Self::Lt,
            "<=" | "less_than_equal" => Self::Le,
            "exists" => Self::Exists,
            "!exists" | "not_exists" => Self::NotExists,
            "in" => Self::In,
            "not_in" | "!in" => Self::NotIn,
            "=~" | "matches" => Self::Matches,
            "!~" | "not_matches" => Self::NotMatches,
            _ => return None,
        })
    }

    /// The positive operator this one negates, if it is a negation.
    fn positive(self) -> Option<Self> {
        match self {
            Self::Ne => Some(Self::Eq),
            Self::NotExists => Some(Self::Exists),
            Self::NotIn => Some(Self::In),
            Self::NotMatches => Some(Self::Matches),
            _ => None,
        }
    }
}

impl Expr {
    fn per_instance(&self) -> bool {
        match self {
            Self::And(a, b) | Self::Or(a, b) => a.per_instance() || b.per_instance(),
            Self::Not(e) => e.per_instance(),
            Self::Condition(c) => !matches!(c.subject, Subject::Attribute(_)),
        }
    }

    fn eval(&self, instance: &dyn InstanceView) -> bool {
        match self {
            Self::And(a, b) => a.eval(instance) && b.eval(instance),
            Self::Or(a, b) => a.eval(instance) || b.eval(instance),
            Self::Not(e) => !e.eval(instance),
            Self::Condition(c) => c.eval(instance),
        }
    }
}

impl Condition {
    fn eval(&self, instance: &dyn InstanceView) -> bool {
        // A negation is "not the positive form", so that a missing
        // attribute or an instance without tasks satisfies it.
        if let Some(positive) = self.operator.positive() {
            return !self.holds(positive, instance);
        }
        self.holds(self.operator, instance)
    }

    fn holds(&self, operator: Operator, instance: &dyn InstanceView) -> bool {
        match &self.subject {
            Subject::Attribute(name) => instance
                .attribute(name)
                .is_some_and(|value| self.compare(operator, value)),
            Subject::TaskGroup => {
                instance.any_task_group(&mut |group| self.compare(operator, group))
            }
            Subject::Fact(fact) => instance.fact(*fact).is_some_and(|value| {
                let argument = match &self.argument {
                    Argument::Value(v) => v,
                    _ => return self.compare(operator, &value),
                };
                let Some(o) = fact.order(&value, argument) else {
                    return false;
                };
                match operator {
                    Operator::Eq => o == Ordering::Equal,
                    Operator::Gt => o == Ordering::Greater,
                    Operator::Ge => o != Ordering::Less,
                    Operator::Lt => o == Ordering::Less,
                    Operator::Le => o != Ordering::Greater,
                    _ => false,
                }
            }),
        }
    }

    fn compare(&self, operator: Operator, value: &str) -> bool {
        match (operator, &self.argument) {
            (Operator::Exists, _) => true,
            (Operator::Eq, Argument::Value(v)) => value == v,
            (Operator::Gt, Argument::Value(v)) => order(value, v) == Ordering::Greater,
            (Operator::Ge, Argument::Value(v)) => order(value, v) != Ordering::Less,
            (Operator::Lt, Argument::Value(v)) => order(value, v) == Ordering::Less,
            (Operator::Le, Argument::Value(v)) => order(value, v) != Ordering::Greater,
            (Operator::In, Argument::List(vs)) => vs.iter().any(|v| v == value),
            (Operator::Matches, Argument::Pattern(re)) => re.is_match(value),
            _ => false,
        }
    }
}

/// Numbers compare as numbers, anything else as text.
fn order(a: &str, b: &str) -> Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.cmp(b),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TokenKind {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    /// A bare word or a symbolic operator.
    Word(String),
    /// A quoted string: always a value, never a keyword.
    Quoted(String),
}

#[derive(Clone, Debug)]
struct Token {
    kind: TokenKind,
    column: usize,
}

impl Token {
    fn describe(&self) -> String {
        match &self.kind {
            TokenKind::LParen => "'('".into(),
            TokenKind::RParen => "')'".into(),
            TokenKind::LBracket => "'['".into(),
            TokenKind::RBracket => "']'".into(),
            TokenKind::Comma => "','".into(),
            TokenKind::Word(w) => format!("'{w}'"),
            TokenKind::Quoted(q) => format!("\"{q}\""),
        }
    }
}

/// Characters that end a bare word.
fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | ',' | '"' | '\'')
}

fn lex(source: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let single = match c {
            '(' => Some(TokenKind::LParen),
            ')' => Some(TokenKind::RParen),
            '[' => Some(TokenKind::LBracket),
            ']' => Some(TokenKind::RBracket),
            ',' => Some(TokenKind::Comma),
            _ => None,
        };
        if c.is_whitespace() {
            i += 1;
        } else if let Some(kind) = single {
            tokens.push(Token { kind, column });
            i += 1;
        } else if c == '"' || c == '\'' {
            let start = i + 1;
            let end = chars[start..]
                .iter()
                .position(|&d| d == c)
                .map(|n| start + n)
                .ok_or_else(|| ParseError {
                    column,
                    expected: format!("a closing {c}"),
                    found: "the end of the expression".into(),
                })?;
            tokens.push(Token {
                kind: TokenKind::Quoted(chars[start..end].iter().collect()),
                column,
            });
            i = end + 1;
        } else if c == '!' && chars.get(i + 1) == Some(&'(') {
            // `!(...)`: negation of a group.
            tokens.push(Token {
                kind: TokenKind::Word("!".into()),
                column,
            });
            i += 1;
        } else {
            let start = i;
            while i < chars.len() && !is_delimiter(chars[i]) {
                i += 1;
            }
            tokens.push(Token {
                kind: TokenKind::Word(chars[start..i].iter().collect()),
                column,
            });
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    end_column: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn peek_word(&self) -> Option<&str> {
        match self.peek().map(|t| &t.kind) {
            Some(TokenKind::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn bump(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token
    }

    fn error(&self, expected: &str) -> ParseError {
        match self.peek() {
            Some(token) => ParseError {
                column: token.column,
                expected: expected.into(),
                found: token.describe(),
            },
            None => ParseError {
                column: self.end_column,
                expected: expected.into(),
                found: "the end of the expression".into(),
            },
        }
    }

    fn expression(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.term()?;
        while matches!(self.peek_word(), Some("or" | "||")) {
            self.bump();
            left = Expr::Or(Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.factor()?;
        while matches!(self.peek_word(), Some("and" | "&&")) {
            self.bump();
            left = Expr::And(Box::new(left), Box::new(self.factor()?));
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<Expr, ParseError> {
        if matches!(self.peek_word(), Some("not" | "!")) {
            self.bump();
            return Ok(Expr::Not(Box::new(self.factor()?)));
        }
        if matches!(self.peek().map(|t| &t.kind), Some(TokenKind::LParen)) {
            self.bump();
            let inner = self.expression()?;
            if !matches!(self.peek().map(|t| &t.kind), Some(TokenKind::RParen)) {
                return Err(self.error("')' or 'and'/'or'"));
            }
            self.bump();
            return Ok(inner);
        }
        self.condition().map(Expr::Condition)
    }

    fn condition(&mut self) -> Result<Condition, ParseError> {
        const SUBJECT: &str = "a subject (attribute:<name>, task:group, agentConnected, agentVersion, ec2InstanceId, registeredAt, runningTasksCount), 'not' or '('";
        let subject =
            match self.peek_word() {
                Some("task:group") => Subject::TaskGroup,
                Some(word) if Fact::from_word(word).is_some() => {
                    Subject::Fact(Fact::from_word(word).expect("just matched"))
                }
                Some(word) => match word.strip_prefix("attribute:") {
                    Some(name) if valid_attribute_name(name) => Subject::Attribute(name.to_owned()),
                    Some(_) => return Err(self.error(
                        "an attribute name (1 to 128 of A-Z a-z 0-9 - _ / .) after 'attribute:'",
                    )),
                    None => return Err(self.error(SUBJECT)),
                },
                None => return Err(self.error(SUBJECT)),
            };
        self.bump();
        let operator = match &subject {
            Subject::Fact(fact) => self
                .peek_word()
                .and_then(Operator::from_word)
                .filter(|o| fact.takes(*o))
                .ok_or_else(|| self.error(fact.operators()))?,
            _ => self
                .peek_word()
                .and_then(Operator::from_word)
                .ok_or_else(|| self.error(Operator::EXPECTED))?,
        };
        self.bump();
        let argument_column = self.peek().map_or(self.end_column, |t| t.column);
        let argument = match operator {
            Operator::Exists | Operator::NotExists => Argument::None,
            Operator::In | Operator::NotIn => Argument::List(self.list()?),
            Operator::Matches | Operator::NotMatches => {
                let pattern_column = self.peek().map_or(self.end_column, |t| t.column);
                let pattern = self.value()?;
                let anchored = format!("^(?:{pattern})$");
                let regex = Regex::new(&anchored).map_err(|e| ParseError {
                    column: pattern_column,
                    expected: "a valid regular expression".into(),
                    found: format!("'{pattern}' ({})", first_line(&e.to_string())),
                })?;
                Argument::Pattern(regex)
            }
            _ => Argument::Value(self.value()?),
        };
        if let (Subject::Fact(fact), Argument::Value(value)) = (&subject, &argument) {
            let expected = match fact {
                Fact::RegisteredAt if Moment::parse(value).is_none() => {
                    Some("a time (2018-06-18T22:28:28Z) or a date (2018-06-18)")
                }
                Fact::RunningTasksCount if value.parse::<u64>().is_err() => Some("a count"),
                Fact::AgentConnected if !matches!(value.as_str(), "true" | "false") => {
                    Some("true or false")
                }
                _ => None,
            };
            if let Some(expected) = expected {
                return Err(ParseError {
                    column: argument_column,
                    expected: expected.into(),
                    found: format!("'{value}'"),
                });
            }
        }
        Ok(Condition {
            subject,
            operator,
            argument,
        })
    }

    fn value(&mut self) -> Result<String, ParseError> {
        match self.peek().map(|t| t.kind.clone()) {
            Some(TokenKind::Quoted(q)) => {
                self.bump();
                Ok(q)
            }
            Some(TokenKind::Word(w)) if !is_keyword(&w) => {
                self.bump();
                Ok(w)
            }
            _ => Err(self.error("a value")),
        }
    }

    fn list(&mut self) -> Result<Vec<String>, ParseError> {
        if !matches!(self.peek().map(|t| &t.kind), Some(TokenKind::LBracket)) {
            return Err(self.error("'[' to open a list of values"));
        }
        self.bump();
        let mut values = vec![self.value()?];
        loop {
            match self.peek().map(|t| &t.kind) {
                Some(TokenKind::Comma) => {
                    self.bump();
                    values.push(self.value()?);
                }
                Some(TokenKind::RBracket) => {
                    self.bump();
                    return Ok(values);
                }
                _ => return Err(self.error("',' or ']'")),
            }
        }
    }
}

fn is_keyword(word: &str) -> bool {
    matches!(word, "and" | "or" | "not" | "&&" | "||" | "!")
}

fn valid_attribute_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '.'))
}

fn first_line(text: &str) -> &str {
    text.lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or(text)
        .trim()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Host {
        attributes: BTreeMap<&'static str, &'static str>,
        groups: Vec<&'static str>,
    }

    impl InstanceView for Host {
        fn attribute(&self, name: &str) -> Option<&str> {
            self.attributes.get(name).copied()
        }
        fn any_task_group(&self, pred: &mut dyn FnMut(&str) -> bool) -> bool {
            self.groups.iter().any(|g| pred(g))
        }
        fn fact(&self, fact: Fact) -> Option<String> {
            Some(
                match fact {
                    Fact::AgentConnected => "true",
                    Fact::AgentVersion => return None,
                    Fact::Ec2InstanceId => "i-a",
                    Fact::RegisteredAt => "2018-06-18T22:28:28Z",
                    Fact::RunningTasksCount => "2",
                }
                .to_owned(),
            )
        }
    }

    fn host() -> Host {
        Host {
            attributes: BTreeMap::from([
                ("ecs.instance-type", "t2.micro"),
                ("ecs.availability-zone", "us-east-1a"),
                ("ecs.os-type", "linux"),
                ("cores", "8"),
                ("stack", "prod"),
            ]),
            groups: vec!["service:web", "family:batch"],
        }
    }

    fn eval(expr: &str) -> bool {
        Query::parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .matches(&host())
    }

    #[test]
    fn every_operator_in_both_spellings() {
        let cases = [
            ("attribute:stack == prod", true),
            ("attribute:stack equals prod", true),
            ("attribute:stack == dev", false),
            ("attribute:stack != dev", true),
            ("attribute:stack not_equals prod", false),
            ("attribute:cores > 4", true),
            ("attribute:cores greater_than 8", false),
            ("attribute:cores >= 8", true),
            ("attribute:cores greater_than_equal 9", false),
            ("attribute:cores < 16", true),
            ("attribute:cores less_than 8", false),
            ("attribute:cores <= 8", true),
            ("attribute:cores less_than_equal 7", false),
            ("attribute:stack exists", true),
            ("attribute:gpu exists", false),
            ("attribute:gpu !exists", true),
            ("attribute:stack not_exists", false),
            (
                "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
                true,
            ),
            ("attribute:ecs.availability-zone in [us-east-1c]", false),
            (
                "attribute:ecs.availability-zone not_in [us-east-1c, us-east-1d]",
                true,
            ),
            ("attribute:ecs.availability-zone !in [us-east-1a]", false),
            ("attribute:ecs.instance-type =~ t2.*", true),
            ("attribute:ecs.instance-type matches m5.*", false),
            ("attribute:ecs.instance-type !~ t2.*", false),
            ("attribute:ecs.instance-type not_matches g2.*", true),
            ("task:group == service:web", true),
            ("task:group == service:db", false),
            ("task:group != service:db", true),
            ("task:group != service:web", false),
            ("task:group in [family:batch, x]", true),
            ("task:group =~ service:.*", true),
            ("task:group exists", true),
        ];
        for (expr, expected) in cases {
            assert_eq!(eval(expr), expected, "{expr}");
        }
    }

    #[test]
    fn a_missing_attribute_fails_positive_and_passes_negative_operators() {
        for (expr, expected) in [
            ("attribute:gpu == yes", false),
            ("attribute:gpu != yes", true),
            ("attribute:gpu > 1", false),
            ("attribute:gpu in [a]", false),
            ("attribute:gpu not_in [a]", true),
            ("attribute:gpu =~ .*", false),
            ("attribute:gpu !~ .*", true),
        ] {
            assert_eq!(eval(expr), expected, "{expr}");
        }
    }

    #[test]
    fn numbers_compare_numerically_and_words_lexically() {
        assert!(!eval("attribute:cores > 10.5"));
        assert!(
            !eval("attribute:cores > 10"),
            "8 < 10 although '8' > '10' as text"
        );
        assert!(eval("attribute:stack > pra"));
        assert!(eval("attribute:stack < prod2"));
    }

    #[test]
    fn matching_is_anchored_to_the_whole_value() {
        assert!(!eval("attribute:ecs.instance-type =~ t2"));
        assert!(eval("attribute:ecs.instance-type =~ 't2\\.(micro|small)'"));
        assert!(!eval("attribute:ecs.instance-type =~ micro"));
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        // and binds tighter than or
        assert!(eval(
            "attribute:stack == dev and attribute:cores > 1 or attribute:ecs.os-type == linux"
        ));
        assert!(!eval(
            "attribute:stack == dev and (attribute:cores > 1 or attribute:ecs.os-type == linux)"
        ));
        // not binds tighter than and
        assert!(!eval("not attribute:stack == prod and attribute:cores > 1"));
        assert!(eval("not (attribute:stack == dev and attribute:cores > 1)"));
        assert!(eval("!(task:group == service:db)"));
        assert!(eval("not(task:group == database)"));
        assert!(eval(
            "attribute:stack == prod && attribute:cores == 8 || attribute:gpu exists"
        ));
        assert!(!eval("! attribute:stack exists"));
    }

    #[test]
    fn the_documented_examples_parse() {
        assert!(eval(
            "attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone != us-east-1d"
        ));
        assert!(!eval("task:group == service:production"));
        assert!(eval("attribute:ecs.os-type == \"linux\""));
    }

    #[test]
    fn per_instance_with_task_group_or_a_fact() {
        assert!(
            !Query::parse("attribute:a == b or not attribute:c exists")
                .expect("parses")
                .per_instance()
        );
        assert!(
            Query::parse("attribute:a == b or not task:group == x")
                .expect("parses")
                .per_instance()
        );
        assert!(
            Query::parse("attribute:a == b or runningTasksCount < 3")
                .expect("parses")
                .per_instance()
        );
    }

    #[test]
    fn the_instance_facts_compare_as_ecs_compares_them() {
        let cases = [
            ("agentConnected == true", true),
            ("agentConnected != true", false),
            ("agentConnected in [false, true]", true),
            ("ec2InstanceId == i-a", true),
            ("ec2InstanceId in [i-b, i-c]", false),
            ("ec2InstanceId not_in [i-b, i-c]", true),
            ("ec2InstanceId =~ i-.*", true),
            ("ec2InstanceId !~ i-.*", false),
            ("runningTasksCount == 2", true),
            ("runningTasksCount < 10", true),
            ("runningTasksCount >= 3", false),
            ("registeredAt > 2018-06-18T22:00:00Z", true),
            ("registeredAt < 2018-06-18T22:28:28Z", false),
            ("registeredAt <= 2018-06-18T22:28:28Z", true),
            // A date compares by day: the instance registered on it.
            ("registeredAt == 2018-06-18", true),
            ("registeredAt > 2018-06-18", false),
            ("registeredAt < 2018-06-19", true),
            // No agent version reported: positive operators are false and
            // their negations true, as for a missing attribute.
            ("agentVersion >= 1.0.0", false),
            ("agentVersion != 1.0.0", true),
            ("runningTasksCount < 3 and ec2InstanceId == i-a", true),
        ];
        for (expr, want) in cases {
            assert_eq!(eval(expr), want, "{expr}");
        }
    }

    #[test]
    fn versions_compare_part_by_part() {
        use Ordering::{Equal, Greater, Less};
        for (a, b, want) in [
            ("1.10.0", "1.9.2", Greater),
            ("1.2", "1.2.0", Equal),
            ("v1.2.3", "1.2.3", Equal),
            ("1.2.3", "1.2.10", Less),
            ("1.2.3-rc1", "1.2.3-rc2", Less),
        ] {
            assert_eq!(version_order(a, b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn a_fact_refuses_operators_and_values_ecs_does_not_take() {
        let cases = [
            (
                "agentConnected > true",
                "at column 16: expected an operator (==, !=, in, not_in, =~, !~), found '>'",
            ),
            (
                "runningTasksCount in [1, 2]",
                "at column 19: expected an operator (==, !=, >, >=, <, <=), found 'in'",
            ),
            (
                "agentVersion =~ 1.*",
                "at column 14: expected an operator (==, !=, >, >=, <, <=), found '=~'",
            ),
            (
                "runningTasksCount < few",
                "at column 21: expected a count, found 'few'",
            ),
            (
                "registeredAt > yesterday",
                "at column 16: expected a time (2018-06-18T22:28:28Z) or a date (2018-06-18), found 'yesterday'",
            ),
            (
                "agentConnected == yes",
                "at column 19: expected true or false, found 'yes'",
            ),
        ];
        for (expr, want) in cases {
            let err = Query::parse(expr).expect_err(expr);
            assert_eq!(err.to_string(), want, "{expr}");
        }
    }

    #[test]
    fn malformed_expressions_say_where_and_what_was_expected() {
        let cases = [
            (
                "",
                "at column 1: expected a subject (attribute:<name>, task:group, agentConnected, agentVersion, ec2InstanceId, registeredAt, runningTasksCount), 'not' or '(', found the end of the expression",
            ),
            (
                "attribute:stack",
                "at column 16: expected an operator (==, !=, >, >=, <, <=, exists, !exists, in, not_in, =~, !~), found the end of the expression",
            ),
            (
                "attribute:stack === prod",
                "at column 17: expected an operator (==, !=, >, >=, <, <=, exists, !exists, in, not_in, =~, !~), found '==='",
            ),
            (
                "attribute:stack ==",
                "at column 19: expected a value, found the end of the expression",
            ),
            (
                "attribute: == prod",
                "at column 1: expected an attribute name (1 to 128 of A-Z a-z 0-9 - _ / .) after 'attribute:', found 'attribute:'",
            ),
            (
                "attribute:st@ck == prod",
                "at column 1: expected an attribute name (1 to 128 of A-Z a-z 0-9 - _ / .) after 'attribute:', found 'attribute:st@ck'",
            ),
            (
                "stack == prod",
                "at column 1: expected a subject (attribute:<name>, task:group, agentConnected, agentVersion, ec2InstanceId, registeredAt, runningTasksCount), 'not' or '(', found 'stack'",
            ),
            (
                "task:name == web",
                "at column 1: expected a subject (attribute:<name>, task:group, agentConnected, agentVersion, ec2InstanceId, registeredAt, runningTasksCount), 'not' or '(', found 'task:name'",
            ),
            (
                "attribute:a == b and",
                "at column 21: expected a subject (attribute:<name>, task:group, agentConnected, agentVersion, ec2InstanceId, registeredAt, runningTasksCount), 'not' or '(', found the end of the expression",
            ),
            (
                "attribute:a == b c",
                "at column 18: expected 'and', 'or' or the end of the expression, found 'c'",
            ),
            (
                "(attribute:a == b",
                "at column 18: expected ')' or 'and'/'or', found the end of the expression",
            ),
            (
                "attribute:a == b)",
                "at column 17: expected 'and', 'or' or the end of the expression, found ')'",
            ),
            (
                "attribute:a in a, b",
                "at column 16: expected '[' to open a list of values, found 'a'",
            ),
            (
                "attribute:a in [a, b",
                "at column 21: expected ',' or ']', found the end of the expression",
            ),
            (
                "attribute:a in []",
                "at column 17: expected a value, found ']'",
            ),
            (
                "attribute:a in [a,, b]",
                "at column 19: expected a value, found ','",
            ),
            (
                "attribute:a == 'prod",
                "at column 16: expected a closing ', found the end of the expression",
            ),
            (
                "attribute:a =~ '(t2'",
                "at column 16: expected a valid regular expression, found '(t2' (error: unclosed group)",
            ),
            (
                "attribute:a == and",
                "at column 16: expected a value, found 'and'",
            ),
            (
                "not",
                "at column 4: expected a subject (attribute:<name>, task:group, agentConnected, agentVersion, ec2InstanceId, registeredAt, runningTasksCount), 'not' or '(', found the end of the expression",
            ),
            (
                "attribute:a exists prod",
                "at column 20: expected 'and', 'or' or the end of the expression, found 'prod'",
            ),
        ];
        assert!(cases.len() >= 15);
        for (expr, message) in cases {
            match Query::parse(expr) {
                Ok(q) => panic!("{expr:?} parsed as {q:?}"),
                Err(e) => assert_eq!(e.to_string(), message, "{expr:?}"),
            }
        }
    }
}
