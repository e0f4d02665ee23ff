//! The syntax tree the parser builds and the checker reads. Every node keeps its span.

use crate::diag::Span;

/// A source file: rules and tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct File {
    /// The rules, in source order.
    pub rules: Vec<Rule>,
    /// The tests, in source order.
    pub tests: Vec<Test>,
}

/// A name as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    /// Its text.
    pub text: String,
    /// Where.
    pub span: Span,
}

/// A duration as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur {
    /// Milliseconds.
    pub ms: u64,
    /// Where.
    pub span: Span,
}

/// What a rule is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every thing of a device type.
    Type(Ident),
    /// One thing.
    Thing(Ident),
}

/// `rule NAME for type T { … }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The rule's name.
    pub name: Ident,
    /// What it is attached to.
    pub target: Option<Target>,
    /// `children of type T`: the type of the things whose `parent` attribute names this twin.
    pub children: Option<Ident>,
    /// `when COND [for D]`.
    pub when: Option<Cond>,
    /// `clear when COND [for D]`.
    pub clear: Option<Cond>,
    /// `cooldown D`.
    pub cooldown: Option<Dur>,
    /// `then { … }`.
    pub then: Vec<Action>,
    /// `on clear { … }`.
    pub on_clear: Vec<Action>,
    /// A clause did not parse (already reported): what is missing may be in it.
    pub broken: bool,
    /// The whole rule.
    pub span: Span,
}

/// A condition, possibly held for a duration.
#[derive(Clone, Debug, PartialEq)]
pub struct Cond {
    /// The condition.
    pub expr: Expr,
    /// `for D`.
    pub hold: Option<Dur>,
}

/// The writable sections of a shadow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    /// `desired`.
    Desired,
    /// `reported`.
    Reported,
}

/// Alert severities.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    /// Informational.
    Info,
    /// Minor.
    Minor,
    /// Major.
    Major,
    /// Critical.
    Critical,
}

impl AlertSeverity {
    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Info => "info",
            AlertSeverity::Minor => "minor",
            AlertSeverity::Major => "major",
            AlertSeverity::Critical => "critical",
        }
    }
}

/// An action in `then`, `on clear` or `on timeout`.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `set desired.x = …` / `set reported.x = …`.
    Set {
        /// Which section.
        section: Section,
        /// The field path below it.
        path: Vec<Ident>,
        /// The value (`null` removes the field).
        value: Expr,
        /// The action.
        span: Span,
    },
    /// `command NAME {…} timeout D [on timeout {…}]`.
    Command {
        /// The command's name (the topic's last level).
        name: Ident,
        /// Its payload.
        payload: Vec<(Ident, Expr)>,
        /// How long the device has to reply.
        timeout: Option<Dur>,
        /// What to do when it does not.
        on_timeout: Vec<Action>,
        /// The action.
        span: Span,
    },
    /// `alert NAME severity S "message {expr}"`.
    Alert {
        /// The alert's name.
        name: Ident,
        /// Its severity.
        severity: AlertSeverity,
        /// Its message.
        message: Template,
        /// The action.
        span: Span,
    },
    /// `emit event "kind" {…}`.
    Emit {
        /// The event's kind.
        kind: String,
        /// Its payload.
        payload: Vec<(Ident, Expr)>,
        /// The action.
        span: Span,
    },
}

/// A string with `{expr}` parts.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    /// Literal text and expressions, in order.
    pub parts: Vec<Part>,
    /// The literal.
    pub span: Span,
}

/// A piece of a template.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Text.
    Text(String),
    /// An interpolated expression.
    Expr(Expr),
}

/// Where a path starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Root {
    /// The latest value of each telemetry field.
    Telemetry,
    /// The classic shadow's `reported`.
    Reported,
    /// The classic shadow's `desired`.
    Desired,
    /// `children.reported.…`: the children's values, only inside aggregates.
    Children,
    /// `device.connected`: the device's connection to the node.
    Device,
    /// `job.id`, `job.status`: the twin's latest job execution change.
    Job,
}

impl Root {
    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            Root::Telemetry => "telemetry",
            Root::Reported => "reported",
            Root::Desired => "desired",
            Root::Children => "children.reported",
            Root::Device => "device",
            Root::Job => "job",
        }
    }
}

/// `telemetry.temp`, `reported.a.b`, `children.reported.temp`.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    /// Where it starts.
    pub root: Root,
    /// The fields.
    pub fields: Vec<Ident>,
    /// The whole path.
    pub span: Span,
}

impl Path {
    /// `telemetry.a.b`.
    pub fn display(&self) -> String {
        let mut out = self.root.as_str().to_owned();
        for f in &self.fields {
            out.push('.');
            out.push_str(&f.text);
        }
        out
    }
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    /// `not`.
    Not,
    /// `-`.
    Neg,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `or`.
    Or,
    /// `and`.
    And,
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/`.
    Div,
    /// `%`.
    Rem,
    /// `??`.
    Coalesce,
}

impl BinOp {
    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Coalesce => "??",
        }
    }
}

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where.
    pub span: Span,
}

/// Kinds of expressions.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A number.
    Num(f64),
    /// A string, possibly with interpolations.
    Str(Template),
    /// `true` / `false`.
    Bool(bool),
    /// `null` (removes a field in `set`, and in test inputs).
    Null,
    /// A field.
    Path(Path),
    /// `not e`, `-e`.
    Unary(UnOp, Box<Expr>),
    /// `a op b`.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `f(args)` or `f(x over D)`.
    Call {
        /// The function.
        name: Ident,
        /// Its arguments.
        args: Vec<Expr>,
        /// `over D`, for window aggregates.
        over: Option<Dur>,
    },
    /// `{k: v, …}`, in payloads and test inputs.
    Object(Vec<(Ident, Expr)>),
    /// Something the parser could not read (already reported).
    Error,
}

/// `test "name" { at D …; … }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Test {
    /// Its name.
    pub name: String,
    /// Its steps, in source order.
    pub steps: Vec<Step>,
    /// The whole test.
    pub span: Span,
}

/// `at D …`.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Virtual time of the step, from the test's start.
    pub at: Dur,
    /// What happens.
    pub kind: StepKind,
    /// The step.
    pub span: Span,
}

/// What a test step does.
#[derive(Clone, Debug, PartialEq)]
pub enum StepKind {
    /// `telemetry {…}`: the device sends a sample.
    Telemetry(Expr),
    /// `report {…}`: the device updates `reported`.
    Report(Expr),
    /// `desire {…}`: an app updates `desired`.
    Desire(Expr),
    /// `child NAME reported {…}`: a child's `reported` changes.
    Child(Ident, Expr),
    /// `reply NAME {…}`: the device answers the latest pending command NAME.
    Reply(Ident, Option<Expr>),
    /// `connected` / `disconnected`: the device connects or its connection ends.
    Presence(bool),
    /// `job "ID" STATUS`: the device takes job ID's execution to STATUS (`in_progress`,
    /// `succeeded`, `failed`, `rejected`).
    Job(String, String),
    /// `expect …` / `expect no …`.
    Expect(bool, Expectation),
}

/// What a test expects.
#[derive(Clone, Debug, PartialEq)]
pub enum Expectation {
    /// `alert NAME [firing|resolved]`.
    Alert(Ident, Option<AlertState>),
    /// `command NAME`.
    Command(Ident),
    /// `event "kind"`.
    Event(String, Span),
    /// A condition over the twin's state.
    That(Expr),
}

/// An alert's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Raised and not resolved.
    Firing,
    /// Resolved.
    Resolved,
}
