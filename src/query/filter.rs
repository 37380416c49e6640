//! MLflow's `search_runs` filter grammar: `clause (AND clause)*`, where a clause is
//! `<entity>.<key> <operator> <value>`. No OR, NOT or parentheses, as in MLflow
//! (`mlflow/utils/search_utils.py`).
//!
//! | entity (aliases) | operators | value |
//! |---|---|---|
//! | `metrics` (`metric`) | `= != < <= > >=` | number |
//! | `params` (`param`, `parameter`, `parameters`) | `= != LIKE ILIKE`, `IS [NOT] NULL` | quoted string |
//! | `tags` (`tag`) | same as params | quoted string |
//! | `attributes` (`attribute`, `attr`, `run`), or no entity | `run_id`: `= != LIKE ILIKE IN NOT IN`; `run_name`, `status`, `user_id`, `lifecycle_stage`: `= != LIKE ILIKE`; `start_time` (`created`), `end_time`: numeric comparators | string, list or number |
//!
//! `search_experiments` ([`Subject::Experiments`]) takes the same grammar over other fields:
//! `tags.<key>` as above, and the attributes `name` (`= != LIKE ILIKE`), `creation_time` and
//! `last_update_time` (numeric comparators); orderings name `name`, `experiment_id`,
//! `creation_time` or `last_update_time`.
//!
//! Keys with other characters go in backticks or double quotes (``metrics.`val loss` > 1``).
//! Only the first `.` separates entity and key (`tags.mlflow.runName`). Every error names the
//! 1-based character column where the problem starts, and names fields and operators as MLflow
//! spells them (`start_time`, `>`).
//!
//! Invariant: `parse` never panics, whatever the input (fuzzed: `fuzz/fuzz_targets/filter.rs`).

use std::fmt;

pub use crate::error::FilterError;

/// A parsed filter: every clause must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// The clauses, ANDed.
    pub clauses: Vec<Clause>,
}

/// One comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Clause {
    /// What is compared.
    pub field: Field,
    /// How.
    pub op: Op,
    /// With what.
    pub value: Value,
}

/// The left side of a clause.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// The latest value of a metric.
    Metric(String),
    /// A param.
    Param(String),
    /// A tag.
    Tag(String),
    /// A run attribute.
    Attribute(Attribute),
    /// A field of the datasets a run used (runs only): a run matches when one of its inputs
    /// does, as in MLflow's SQL store.
    Dataset(DatasetField),
}

/// The fields of a run's dataset inputs a filter can name (`dataset.<field>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetField {
    /// The dataset's name.
    Name,
    /// The dataset's digest.
    Digest,
    /// The input's `mlflow.data.context` tag; an input without one matches no clause.
    Context,
}

impl DatasetField {
    /// MLflow's name of the field.
    pub fn name(self) -> &'static str {
        match self {
            DatasetField::Name => "name",
            DatasetField::Digest => "digest",
            DatasetField::Context => "context",
        }
    }
}

/// Run attributes a filter or an ordering can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// `run_id`.
    RunId,
    /// `run_name`.
    RunName,
    /// `status`.
    Status,
    /// `user_id`.
    UserId,
    /// `lifecycle_stage`.
    LifecycleStage,
    /// `start_time` (alias `created`), ms.
    StartTime,
    /// `end_time`, ms.
    EndTime,
    /// An experiment's `name`.
    Name,
    /// An experiment's `experiment_id` (ordering only, as in MLflow).
    ExperimentId,
    /// An experiment's `creation_time`, ms.
    CreationTime,
    /// An experiment's `last_update_time` (a logged model's `last_updated_timestamp`), ms.
    LastUpdateTime,
    /// A logged model's `model_id`.
    ModelId,
    /// A logged model's `source_run_id`.
    SourceRunId,
    /// A logged model's `model_type`.
    ModelType,
}

impl Attribute {
    fn from_name(subject: Subject, name: &str) -> Option<Attribute> {
        Some(match (subject, name) {
            (Subject::Runs, "run_id") => Attribute::RunId,
            (Subject::Runs, "run_name" | "run name") => Attribute::RunName,
            (Subject::Runs, "status") => Attribute::Status,
            (Subject::Runs, "user_id") => Attribute::UserId,
            (Subject::Runs, "lifecycle_stage") => Attribute::LifecycleStage,
            (Subject::Runs, "start_time" | "created" | "Created") => Attribute::StartTime,
            (Subject::Runs, "end_time") => Attribute::EndTime,
            (Subject::Experiments, "name") => Attribute::Name,
            (Subject::Experiments, "experiment_id") => Attribute::ExperimentId,
            (Subject::Experiments, "creation_time") => Attribute::CreationTime,
            (Subject::Experiments, "last_update_time") => Attribute::LastUpdateTime,
            (Subject::LoggedModels, "name") => Attribute::Name,
            (Subject::LoggedModels, "model_id") => Attribute::ModelId,
            (Subject::LoggedModels, "status") => Attribute::Status,
            (Subject::LoggedModels, "source_run_id") => Attribute::SourceRunId,
            (Subject::LoggedModels, "model_type") => Attribute::ModelType,
            (
                Subject::LoggedModels,
                "creation_time" | "creation_timestamp" | "creation_timestamp_ms",
            ) => Attribute::CreationTime,
            (Subject::LoggedModels, "last_updated_timestamp" | "last_updated_timestamp_ms") => {
                Attribute::LastUpdateTime
            }
            _ => return None,
        })
    }

    /// MLflow's name for the attribute, as a user writes it.
    pub fn name(self) -> &'static str {
        match self {
            Attribute::RunId => "run_id",
            Attribute::RunName => "run_name",
            Attribute::Status => "status",
            Attribute::UserId => "user_id",
            Attribute::LifecycleStage => "lifecycle_stage",
            Attribute::StartTime => "start_time",
            Attribute::EndTime => "end_time",
            Attribute::Name => "name",
            Attribute::ExperimentId => "experiment_id",
            Attribute::CreationTime => "creation_time",
            Attribute::LastUpdateTime => "last_update_time",
            Attribute::ModelId => "model_id",
            Attribute::SourceRunId => "source_run_id",
            Attribute::ModelType => "model_type",
        }
    }

    fn is_numeric(self) -> bool {
        matches!(
            self,
            Attribute::StartTime
                | Attribute::EndTime
                | Attribute::CreationTime
                | Attribute::LastUpdateTime
        )
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a filter searches: MLflow gives runs and experiments different fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// `search_runs`: metrics, params, tags and run attributes.
    Runs,
    /// `search_experiments`: `name`, `creation_time`, `last_update_time` and tags
    /// (`experiment_id` too, in an ordering).
    Experiments,
    /// `search_logged_models`: `name`, `model_id`, `status`, `source_run_id`, `model_type`,
    /// `creation_time`, `last_updated_timestamp`, metrics, params and tags.
    LoggedModels,
}

impl Subject {
    fn attribute_names(self) -> &'static str {
        match self {
            Subject::Runs => {
                "run_id, run_name, status, user_id, lifecycle_stage, start_time or end_time \
                 (or an entity prefix: metrics., params., tags.)"
            }
            Subject::Experiments => "name, creation_time or last_update_time (or tags.<key>)",
            Subject::LoggedModels => {
                "name, model_id, status, source_run_id, model_type, creation_time or \
                 last_updated_timestamp (or an entity prefix: metrics., params., tags.)"
            }
        }
    }
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `LIKE` (case-sensitive; `%` any run, `_` one character)
    Like,
    /// `ILIKE` (case-insensitive `LIKE`)
    ILike,
    /// `IN (...)`
    In,
    /// `NOT IN (...)`
    NotIn,
    /// `IS NULL`
    IsNull,
    /// `IS NOT NULL`
    IsNotNull,
}

impl Op {
    /// The operator as MLflow's grammar spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Like => "LIKE",
            Op::ILike => "ILIKE",
            Op::In => "IN",
            Op::NotIn => "NOT IN",
            Op::IsNull => "IS NULL",
            Op::IsNotNull => "IS NOT NULL",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The right side of a clause.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number.
    Number(f64),
    /// A quoted string.
    Text(String),
    /// A parenthesized list of strings.
    List(Vec<String>),
    /// Nothing (`IS [NOT] NULL`).
    None,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted { text: String, quote: char },
    Number(f64),
    Symbol(&'static str),
    LeftParen,
    RightParen,
    Comma,
}

#[derive(Clone, Debug)]
struct Spanned {
    token: Token,
    column: usize,
}

fn error(column: usize, message: impl Into<String>) -> FilterError {
    FilterError {
        input: String::new(),
        column,
        message: message.into(),
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '/' | ':' | '-')
}

fn tokenize(input: &str) -> Result<Vec<Spanned>, FilterError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let token = match c {
            '(' => {
                i += 1;
                Token::LeftParen
            }
            ')' => {
                i += 1;
                Token::RightParen
            }
            ',' => {
                i += 1;
                Token::Comma
            }
            '=' => {
                i += 1;
                Token::Symbol("=")
            }
            '!' | '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (symbol, width) = match (c, next) {
                    ('!', Some('=')) => ("!=", 2),
                    ('<', Some('>')) => ("!=", 2),
                    ('<', Some('=')) => ("<=", 2),
                    ('>', Some('=')) => (">=", 2),
                    ('<', _) => ("<", 1),
                    ('>', _) => (">", 1),
                    _ => return Err(error(column, "'!' must be followed by '='")),
                };
                i += width;
                Token::Symbol(symbol)
            }
            '\'' | '"' | '`' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(error(column, format!("unterminated {c}-quoted text"))),
                        // A doubled quote stands for one quote character, as in SQL.
                        Some(q) if *q == c && chars.get(i + 1) == Some(&c) => {
                            text.push(c);
                            i += 2;
                        }
                        Some(q) if *q == c => {
                            i += 1;
                            break;
                        }
                        Some(other) => {
                            text.push(*other);
                            i += 1;
                        }
                    }
                }
                Token::Quoted { text, quote: c }
            }
            c if c.is_ascii_digit()
                || (matches!(c, '-' | '+' | '.') && starts_number(&chars, i)) =>
            {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '+' | '-'))
                {
                    // Signs only right after an exponent marker.
                    if matches!(chars[i], '+' | '-') && !matches!(chars[i - 1], 'e' | 'E') {
                        break;
                    }
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let number = text
                    .parse::<f64>()
                    .map_err(|_| error(column, format!("{text:?} is not a number")))?;
                Token::Number(number)
            }
            c if is_word_char(c) => {
                let start = i;
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                Token::Word(chars[start..i].iter().collect())
            }
            other => return Err(error(column, format!("unexpected character {other:?}"))),
        };
        tokens.push(Spanned { token, column });
    }
    Ok(tokens)
}

fn starts_number(chars: &[char], at: usize) -> bool {
    let next = chars.get(at + 1).copied();
    match chars[at] {
        '-' | '+' => next.is_some_and(|c| c.is_ascii_digit() || c == '.'),
        '.' => next.is_some_and(|c| c.is_ascii_digit()),
        _ => false,
    }
}

struct Parser {
    subject: Subject,
    tokens: Vec<Spanned>,
    position: usize,
    end_column: usize,
}

impl Parser {
    fn new(subject: Subject, input: &str) -> Result<Parser, FilterError> {
        let tokens = tokenize(input)?;
        Ok(Parser {
            subject,
            tokens,
            position: 0,
            end_column: input.chars().count() + 1,
        })
    }

    fn peek(&self) -> Option<&Spanned> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Spanned> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn column(&self) -> usize {
        self.peek().map_or(self.end_column, |t| t.column)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Spanned { token: Token::Word(w), .. }) if w.eq_ignore_ascii_case(word))
    }

    fn field(&mut self) -> Result<(Field, usize), FilterError> {
        let Some(Spanned { token, column }) = self.next() else {
            return Err(error(
                self.end_column,
                "expected a field such as metrics.loss",
            ));
        };
        let (entity, key) = match token {
            Token::Word(word) => match word.split_once('.') {
                Some((entity, "")) => (Some(entity.to_string()), self.quoted_key(column)?),
                Some((entity, key)) => (Some(entity.to_string()), key.to_string()),
                None => (None, word),
            },
            // `entity`.key or `entity`."key"
            Token::Quoted { text, quote: '`' } if self.peek_dot_word() => {
                let Some(Spanned {
                    token: Token::Word(rest),
                    ..
                }) = self.next()
                else {
                    return Err(error(column, "expected '.' and a key after the entity"));
                };
                let key = match rest.strip_prefix('.') {
                    Some("") => self.quoted_key(column)?,
                    Some(key) => key.to_string(),
                    None => return Err(error(column, "expected '.' after the entity")),
                };
                (Some(text), key)
            }
            Token::Quoted { text, .. } => (None, text),
            other => {
                return Err(error(
                    column,
                    format!("expected a field, found {}", describe(&other)),
                ));
            }
        };
        if key.is_empty() {
            return Err(error(column, "empty key"));
        }
        let entity = entity.as_deref().map(str::to_ascii_lowercase);
        let field = match (self.subject, entity.as_deref()) {
            (Subject::Runs | Subject::LoggedModels, Some("metric" | "metrics")) => {
                Field::Metric(key)
            }
            (
                Subject::Runs | Subject::LoggedModels,
                Some("param" | "params" | "parameter" | "parameters"),
            ) => Field::Param(key),
            (_, Some("tag" | "tags")) => Field::Tag(key),
            (Subject::Runs, Some("dataset" | "datasets")) => Field::Dataset(match key.as_str() {
                "name" => DatasetField::Name,
                "digest" => DatasetField::Digest,
                "context" => DatasetField::Context,
                _ => {
                    return Err(error(
                        column,
                        format!("unknown dataset field {key:?}; expected name, digest or context"),
                    ));
                }
            }),
            (_, Some("attribute" | "attributes" | "attr" | "run") | None) => {
                let attribute = Attribute::from_name(self.subject, &key).ok_or_else(|| {
                    error(
                        column,
                        format!(
                            "unknown attribute {key:?}; expected {}",
                            self.subject.attribute_names()
                        ),
                    )
                })?;
                Field::Attribute(attribute)
            }
            (Subject::Runs | Subject::LoggedModels, Some(other)) => {
                return Err(error(
                    column,
                    format!(
                        "unknown entity {other:?}; expected metrics, params, tags{}",
                        if self.subject == Subject::Runs {
                            ", attributes or dataset"
                        } else {
                            " or attributes"
                        }
                    ),
                ));
            }
            (Subject::Experiments, Some(other)) => {
                return Err(error(
                    column,
                    format!(
                        "unknown entity {other:?}; experiments have tags and attributes (name, \
                         creation_time, last_update_time), no metrics or params"
                    ),
                ));
            }
        };
        Ok((field, column))
    }

    fn peek_dot_word(&self) -> bool {
        matches!(self.peek(), Some(Spanned { token: Token::Word(w), .. }) if w.starts_with('.'))
    }

    fn quoted_key(&mut self, column: usize) -> Result<String, FilterError> {
        match self.next() {
            Some(Spanned {
                token:
                    Token::Quoted {
                        text,
                        quote: '`' | '"',
                    },
                ..
            }) => Ok(text),
            _ => Err(error(
                column,
                "expected a key after '.' (quote keys with special characters in backticks)",
            )),
        }
    }

    fn op(&mut self) -> Result<(Op, usize), FilterError> {
        let column = self.column();
        let Some(Spanned { token, .. }) = self.next() else {
            return Err(error(
                column,
                "expected an operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, IS)",
            ));
        };
        let op = match token {
            Token::Symbol("=") => Op::Eq,
            Token::Symbol("!=") => Op::Ne,
            Token::Symbol("<") => Op::Lt,
            Token::Symbol("<=") => Op::Le,
            Token::Symbol(">") => Op::Gt,
            Token::Symbol(">=") => Op::Ge,
            Token::Word(w) if w.eq_ignore_ascii_case("like") => Op::Like,
            Token::Word(w) if w.eq_ignore_ascii_case("ilike") => Op::ILike,
            Token::Word(w) if w.eq_ignore_ascii_case("in") => Op::In,
            Token::Word(w) if w.eq_ignore_ascii_case("not") => {
                if !self.keyword("in") {
                    return Err(error(
                        self.column(),
                        "expected IN after NOT (NOT is only valid in NOT IN)",
                    ));
                }
                self.position += 1;
                Op::NotIn
            }
            Token::Word(w) if w.eq_ignore_ascii_case("is") => {
                let negated = self.keyword("not");
                if negated {
                    self.position += 1;
                }
                if !self.keyword("null") {
                    return Err(error(self.column(), "expected NULL after IS"));
                }
                self.position += 1;
                if negated { Op::IsNotNull } else { Op::IsNull }
            }
            other => {
                return Err(error(
                    column,
                    format!("expected an operator, found {}", describe(&other)),
                ));
            }
        };
        Ok((op, column))
    }

    fn value(&mut self, op: Op) -> Result<(Value, usize), FilterError> {
        let column = self.column();
        if matches!(op, Op::IsNull | Op::IsNotNull) {
            return Ok((Value::None, column));
        }
        if matches!(op, Op::In | Op::NotIn) {
            return self.list().map(|list| (Value::List(list), column));
        }
        match self.next() {
            Some(Spanned {
                token: Token::Number(n),
                ..
            }) => Ok((Value::Number(n), column)),
            Some(Spanned {
                token:
                    Token::Quoted {
                        text,
                        quote: '\'' | '"',
                    },
                ..
            }) => Ok((Value::Text(text), column)),
            Some(Spanned { token, .. }) => Err(error(
                column,
                format!(
                    "expected a number or a quoted string, found {}",
                    describe(&token)
                ),
            )),
            None => Err(error(column, "expected a value")),
        }
    }

    fn list(&mut self) -> Result<Vec<String>, FilterError> {
        let column = self.column();
        if !matches!(
            self.next(),
            Some(Spanned {
                token: Token::LeftParen,
                ..
            })
        ) {
            return Err(error(column, "expected '(' to start a list"));
        }
        let mut items = Vec::new();
        loop {
            let column = self.column();
            match self.next() {
                Some(Spanned {
                    token:
                        Token::Quoted {
                            text,
                            quote: '\'' | '"',
                        },
                    ..
                }) => items.push(text),
                _ => return Err(error(column, "expected a quoted string in the list")),
            }
            let column = self.column();
            match self.next() {
                Some(Spanned {
                    token: Token::Comma,
                    ..
                }) => continue,
                Some(Spanned {
                    token: Token::RightParen,
                    ..
                }) => return Ok(items),
                _ => return Err(error(column, "expected ',' or ')' in the list")),
            }
        }
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word(w) => format!("{w:?}"),
        Token::Quoted { text, quote } => format!("{quote}{text}{quote}"),
        Token::Number(n) => format!("the number {n}"),
        Token::Symbol(s) => format!("'{s}'"),
        Token::LeftParen => "'('".to_string(),
        Token::RightParen => "')'".to_string(),
        Token::Comma => "','".to_string(),
    }
}

/// Checks that `op` and `value` fit `field`, MLflow's rules.
fn check(
    field: &Field,
    op: Op,
    value: &Value,
    op_column: usize,
    value_column: usize,
) -> Result<(), FilterError> {
    use Op::*;
    let numeric =
        matches!(field, Field::Metric(_)) || matches!(field, Field::Attribute(a) if a.is_numeric());
    let allowed: &[Op] = match field {
        Field::Metric(_) => &[Eq, Ne, Lt, Le, Gt, Ge],
        Field::Param(_) | Field::Tag(_) => &[Eq, Ne, Like, ILike, IsNull, IsNotNull],
        Field::Attribute(a) if a.is_numeric() => &[Eq, Ne, Lt, Le, Gt, Ge],
        Field::Attribute(Attribute::RunId) => &[Eq, Ne, Like, ILike, In, NotIn],
        Field::Attribute(Attribute::ExperimentId) => &[],
        Field::Attribute(_) => &[Eq, Ne, Like, ILike],
        Field::Dataset(_) => &[Eq, Ne, Like, ILike, In, NotIn],
    };
    if allowed.is_empty() {
        return Err(error(
            op_column,
            format!(
                "{} can only be ordered by, not filtered on",
                field_name(field)
            ),
        ));
    }
    if !allowed.contains(&op) {
        let names: Vec<&str> = allowed.iter().map(|op| op.as_str()).collect();
        return Err(error(
            op_column,
            format!(
                "'{op}' is not allowed on {} (allowed: {})",
                field_name(field),
                names.join(", ")
            ),
        ));
    }
    match (numeric, value) {
        (true, Value::Number(_)) | (false, Value::Text(_) | Value::List(_) | Value::None) => Ok(()),
        (true, _) => Err(error(
            value_column,
            format!("{} takes a number (unquoted)", field_name(field)),
        )),
        (false, _) => Err(error(
            value_column,
            format!("{} takes a quoted string", field_name(field)),
        )),
    }
}

fn field_name(field: &Field) -> String {
    match field {
        Field::Metric(key) => format!("metrics.{key}"),
        Field::Param(key) => format!("params.{key}"),
        Field::Tag(key) => format!("tags.{key}"),
        Field::Attribute(attribute) => attribute.name().to_string(),
        Field::Dataset(field) => format!("dataset.{}", field.name()),
    }
}

/// Parses a run filter. An empty (or all-blank) filter matches every run.
pub fn parse(input: &str) -> Result<Filter, FilterError> {
    parse_for(Subject::Runs, input)
}

/// Parses a filter over `subject`'s fields. An empty (or all-blank) filter matches everything.
pub fn parse_for(subject: Subject, input: &str) -> Result<Filter, FilterError> {
    clauses(subject, input).map_err(|error| error.within(input))
}

fn clauses(subject: Subject, input: &str) -> Result<Filter, FilterError> {
    let mut parser = Parser::new(subject, input)?;
    let mut filter = Filter::default();
    if parser.peek().is_none() {
        return Ok(filter);
    }
    loop {
        let (field, _) = parser.field()?;
        let (op, op_column) = parser.op()?;
        let (value, value_column) = parser.value(op)?;
        check(&field, op, &value, op_column, value_column)?;
        filter.clauses.push(Clause { field, op, value });
        match parser.peek() {
            None => return Ok(filter),
            Some(_) if parser.keyword("and") => parser.position += 1,
            Some(Spanned { token, column }) => {
                let hint = if matches!(token, Token::Word(w) if w.eq_ignore_ascii_case("or")) {
                    "OR is not supported (MLflow's grammar has only AND)".to_string()
                } else {
                    format!("expected AND, found {}", describe(token))
                };
                return Err(error(*column, hint));
            }
        }
    }
}

/// One `order_by` element: `<field> [ASC|DESC]`.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderBy {
    /// What to sort on.
    pub field: Field,
    /// Ascending (the default) or descending.
    pub ascending: bool,
}

/// Parses one `order_by` element of a run search.
pub fn parse_order_by(input: &str) -> Result<OrderBy, FilterError> {
    parse_order_by_for(Subject::Runs, input)
}

/// Parses one `order_by` element over `subject`'s fields.
pub fn parse_order_by_for(subject: Subject, input: &str) -> Result<OrderBy, FilterError> {
    order_by(subject, input).map_err(|error| error.within(input))
}

fn order_by(subject: Subject, input: &str) -> Result<OrderBy, FilterError> {
    let mut parser = Parser::new(subject, input)?;
    let (field, column) = parser.field()?;
    if matches!(field, Field::Dataset(_)) {
        return Err(error(
            column,
            "runs are filtered on their datasets, not ordered by them",
        ));
    }
    if subject == Subject::Experiments && !matches!(field, Field::Attribute(_)) {
        return Err(error(
            column,
            "experiments are ordered by name, experiment_id, creation_time or last_update_time",
        ));
    }
    let ascending = if parser.keyword("desc") {
        parser.position += 1;
        false
    } else {
        if parser.keyword("asc") {
            parser.position += 1;
        }
        true
    };
    if let Some(extra) = parser.peek() {
        return Err(error(
            extra.column,
            format!(
                "unexpected {} after the order (one field per element)",
                describe(&extra.token)
            ),
        ));
    }
    Ok(OrderBy { field, ascending })
}

/// SQL `LIKE`: `%` matches any run of characters, `_` exactly one.
pub fn like(text: &str, pattern: &str, case_insensitive: bool) -> bool {
    let fold = |s: &str| -> Vec<char> {
        if case_insensitive {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    let (text, pattern) = (fold(text), fold(pattern));
    // Iterative matching with backtracking to the last '%': linear in practice, never recursive.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '_' || pattern[p] == text[t]) {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == '%' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '%')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_example() {
        let filter = parse(
            "metrics.acc > 0.9 and params.lr = '0.01' and tags.model LIKE 'res%' and attributes.status = 'FINISHED'",
        )
        .unwrap();
        assert_eq!(filter.clauses.len(), 4);
        assert_eq!(
            filter.clauses[0],
            Clause {
                field: Field::Metric("acc".into()),
                op: Op::Gt,
                value: Value::Number(0.9)
            }
        );
        assert_eq!(filter.clauses[2].op, Op::Like);
        assert_eq!(filter.clauses[3].field, Field::Attribute(Attribute::Status));
    }

    #[test]
    fn parses_quoting_dotted_keys_lists_and_null_tests() {
        let filter = parse(
            "metrics.`val loss` <= -1e-3 AND params.\"lr\" != \"0.1\" AND tags.mlflow.runName ILIKE '%A%' \
             AND run_id IN ('a', 'b') AND `params`.opt IS NOT NULL AND attr.start_time >= 5 AND tags.x IS NULL",
        )
        .unwrap();
        assert_eq!(filter.clauses[0].field, Field::Metric("val loss".into()));
        assert_eq!(filter.clauses[0].value, Value::Number(-1e-3));
        assert_eq!(filter.clauses[1].field, Field::Param("lr".into()));
        assert_eq!(filter.clauses[2].field, Field::Tag("mlflow.runName".into()));
        assert_eq!(
            filter.clauses[3].value,
            Value::List(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            filter.clauses[4],
            Clause {
                field: Field::Param("opt".into()),
                op: Op::IsNotNull,
                value: Value::None
            }
        );
        assert_eq!(
            filter.clauses[5].field,
            Field::Attribute(Attribute::StartTime)
        );
        assert_eq!(filter.clauses[6].op, Op::IsNull);
        assert_eq!(parse("  ").unwrap(), Filter::default());
    }

    #[test]
    fn errors_point_at_the_column_of_the_mistake() {
        let cases: &[(&str, usize, &str)] = &[
            ("metrics.acc > 0.9 or params.lr = '1'", 19, "OR"),
            ("metrics.acc > '0.9'", 15, "number"),
            ("params.lr = 0.01", 13, "quoted"),
            ("params.lr > '1'", 11, "not allowed"),
            ("metric.acc >", 13, "value"),
            ("foo.bar = '1'", 1, "entity"),
            ("nonsense = '1'", 1, "attribute"),
            ("metrics.acc ~ 1", 13, "unexpected character"),
            ("params.lr = 'open", 13, "unterminated"),
            ("run_id IN ('a' 'b')", 16, "','"),
            ("metrics.acc > 1 and", 20, "field"),
            ("tags.t IS 'x'", 11, "NULL"),
        ];
        for (input, column, needle) in cases {
            let error = parse(input).unwrap_err();
            assert_eq!(error.column, *column, "{input:?}: {error}");
            assert!(error.message.contains(needle), "{input:?}: {error}");
        }
    }

    #[test]
    fn errors_use_mlflow_names_never_rust_ones() {
        let cases: &[(&str, &[&str])] = &[
            ("params.lr > '1'", &["'>'", "params.lr", "IS NOT NULL"]),
            ("start_time LIKE 'x'", &["'LIKE'", "start_time", "<="]),
            ("status >= 'x'", &["'>='", "status"]),
            ("end_time = 'x'", &["end_time takes a number"]),
            ("run_id < 'x'", &["'<'", "run_id", "NOT IN"]),
        ];
        for (input, needles) in cases {
            let error = parse(input).unwrap_err();
            let text = error.to_string();
            for needle in *needles {
                assert!(text.contains(needle), "{input:?}: {text}");
            }
            for rust_name in [
                "Gt",
                "Ge",
                "Lt",
                "Like",
                "StartTime",
                "EndTime",
                "RunId",
                "Status",
            ] {
                assert!(!text.contains(rust_name), "{input:?}: {text}");
            }
            assert_eq!(error.input, *input);
        }
    }

    #[test]
    fn experiments_have_their_own_fields() {
        let filter = parse_for(
            Subject::Experiments,
            "name LIKE 'a%' AND attributes.creation_time > 5 AND tags.team ILIKE 'x' \
             AND last_update_time <= 9 AND tags.t IS NULL",
        )
        .unwrap();
        assert_eq!(filter.clauses[0].field, Field::Attribute(Attribute::Name));
        assert_eq!(
            filter.clauses[1].field,
            Field::Attribute(Attribute::CreationTime)
        );
        assert_eq!(filter.clauses[2].field, Field::Tag("team".into()));
        let cases: &[(&str, usize, &str)] = &[
            ("metrics.acc > 1", 1, "no metrics or params"),
            ("run_name = 'x'", 1, "unknown attribute \"run_name\""),
            ("name > 'x'", 6, "'>' is not allowed on name"),
            ("creation_time = 'x'", 17, "creation_time takes a number"),
            ("experiment_id = '1'", 15, "only be ordered by"),
        ];
        for (input, column, needle) in cases {
            let error = parse_for(Subject::Experiments, input).unwrap_err();
            assert_eq!(error.column, *column, "{input:?}: {error}");
            assert!(error.message.contains(needle), "{input:?}: {error}");
        }
        assert!(parse("name = 'x'").is_err());
        let order = parse_order_by_for(Subject::Experiments, "experiment_id DESC").unwrap();
        assert_eq!(order.field, Field::Attribute(Attribute::ExperimentId));
        assert!(parse_order_by_for(Subject::Experiments, "tags.team").is_err());
    }

    #[test]
    fn order_by_parses_direction_and_rejects_extras() {
        assert_eq!(
            parse_order_by("metrics.acc DESC").unwrap(),
            OrderBy {
                field: Field::Metric("acc".into()),
                ascending: false
            }
        );
        assert!(parse_order_by("params.lr").unwrap().ascending);
        assert_eq!(
            parse_order_by("start_time asc").unwrap().field,
            Field::Attribute(Attribute::StartTime)
        );
        assert!(parse_order_by("metrics.a, metrics.b").is_err());
    }

    #[test]
    fn like_matches_sql_wildcards() {
        assert!(like("resnet50", "res%", false));
        assert!(like("resnet50", "%net__", false));
        assert!(!like("ResNet", "res%", false));
        assert!(like("ResNet", "res%", true));
        assert!(like("", "%", false));
        assert!(!like("abc", "a_", false));
        assert!(like("a%b", "a%b", false));
        assert!(like(&"a".repeat(1000), &"%a".repeat(50), false));
    }

    #[test]
    fn dataset_fields_are_runs_only_and_filters_only() {
        let filter = parse("datasets.context IN ('training') AND dataset.digest != 'x'").unwrap();
        assert_eq!(
            filter.clauses[0].field,
            Field::Dataset(DatasetField::Context)
        );
        assert_eq!(
            filter.clauses[1].field,
            Field::Dataset(DatasetField::Digest)
        );
        assert!(parse_for(Subject::LoggedModels, "dataset.name = 'x'").is_err());
        assert!(parse_for(Subject::Experiments, "dataset.name = 'x'").is_err());
        assert!(parse("dataset.schema = 'x'").is_err());
        assert!(parse_order_by("dataset.name DESC").is_err());
    }
}
