//! The compiled form a twin evaluates: expressions as small trees over resolved slots (paths,
//! windows, edges), actions with their payload templates, and the limits that bound a rule's
//! cost. Shared (`Arc`) by every twin the rule applies to.

use crate::ast::{AlertSeverity, AlertState, BinOp, Root, Section};
use serde_json::Value;
use std::sync::Arc;

/// A runtime value. `Missing` is a value of its own: a field that is absent, or an aggregate
/// over nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// A number.
    Num(f64),
    /// A string.
    Str(Arc<str>),
    /// A boolean.
    Bool(bool),
    /// `null` (removes a field when set).
    Null,
    /// An object (payloads only).
    Object(Vec<(Arc<str>, Val)>),
    /// Absent.
    Missing,
}

/// Window and children aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Agg {
    /// Mean.
    Avg,
    /// Smallest.
    Min,
    /// Largest.
    Max,
    /// Sum.
    Sum,
    /// Number of values.
    Count,
}

/// A compiled expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A constant.
    Const(Val),
    /// A field: an index into [`CompiledRule::paths`].
    Path(u16),
    /// `exists(path)`.
    Exists(u16),
    /// `not e`.
    Not(Box<Expr>),
    /// `-e`.
    Neg(Box<Expr>),
    /// `a op b`.
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `rising(e)` / `falling(e)`, with its slot of rule state.
    Edge {
        /// Slot in the rule's edge state.
        slot: u16,
        /// Rising (false → true) or falling.
        rising: bool,
        /// The condition watched.
        arg: Box<Expr>,
    },
    /// A window aggregate: the aggregate, and an index into [`CompiledRule::windows`].
    Window(Agg, u16),
    /// An aggregate over the children's values of a path.
    Children(Agg, u16),
    /// How many children the twin has.
    ChildCount,
    /// `abs(e)`.
    Abs(Box<Expr>),
    /// `round(e)`.
    Round(Box<Expr>),
    /// `min(a, b)` / `max(a, b)`.
    MinMax(bool, Box<Expr>, Box<Expr>),
    /// A string with interpolations.
    Template(Vec<TemplatePart>),
    /// `{k: v}` (payloads).
    Object(Vec<(Arc<str>, Expr)>),
}

/// A piece of a template.
#[derive(Clone, Debug, PartialEq)]
pub enum TemplatePart {
    /// Text.
    Text(Arc<str>),
    /// A value, rendered.
    Expr(Expr),
}

/// A field a rule reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRef {
    /// Where it starts.
    pub root: Root,
    /// The fields below the root.
    pub fields: Vec<Arc<str>>,
    /// `a.b`: the fields joined, the key of telemetry values and children's values.
    pub key: Arc<str>,
}

/// A bounded window over a telemetry field, kept as running aggregates (count, sum, min,
/// max per bucket), shared by every aggregate of that field over that length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    /// The telemetry field (an index into [`CompiledRule::paths`]).
    pub path: u16,
    /// Its length, ms.
    pub over_ms: u64,
}

/// A compiled action.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Set a field of `desired` or `reported`.
    Set {
        /// Which section.
        section: Section,
        /// The field path.
        path: Vec<Arc<str>>,
        /// The value.
        value: Expr,
    },
    /// Send a command to the device.
    Command {
        /// Its name.
        name: Arc<str>,
        /// Its payload (an [`Expr::Object`]).
        payload: Expr,
        /// How long the device has to reply.
        timeout_ms: u64,
        /// What to do if it does not.
        on_timeout: Vec<Action>,
    },
    /// Raise an alert (resolved when the rule clears).
    Alert {
        /// Its name.
        name: Arc<str>,
        /// Its severity.
        severity: AlertSeverity,
        /// Its message (a template).
        message: Expr,
    },
    /// Emit an event to apps.
    Emit {
        /// Its kind.
        kind: Arc<str>,
        /// Its payload (an [`Expr::Object`]).
        payload: Expr,
    },
}

/// What a rule is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleTarget {
    /// Every thing of a device type.
    Type(String),
    /// One thing.
    Thing(String),
}

/// A rule ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct CompiledRule {
    /// Its name.
    pub name: Arc<str>,
    /// A hash of its source: rule state is kept across reloads while it is unchanged.
    pub hash: u64,
    /// What it is attached to.
    pub target: RuleTarget,
    /// The device type of its children, if it reads them.
    pub children_type: Option<String>,
    /// The condition that fires it.
    pub when: Expr,
    /// How long `when` must hold, ms.
    pub when_hold_ms: u64,
    /// The condition that clears it and how long it must hold; `None`: it clears as soon as
    /// `when` stops holding.
    pub clear: Option<(Expr, u64)>,
    /// The least time between two firings, ms.
    pub cooldown_ms: u64,
    /// Actions when it fires.
    pub then: Vec<Action>,
    /// Actions when it clears.
    pub on_clear: Vec<Action>,
    /// The fields it reads.
    pub paths: Vec<PathRef>,
    /// Its windows.
    pub windows: Vec<WindowSpec>,
    /// How many `rising`/`falling` slots it has.
    pub edges: u16,
    /// Whether `when` is an edge (momentary) condition.
    pub edge_triggered: bool,
    /// Its source text.
    pub source: String,
}

impl CompiledRule {
    /// Whether the rule reads any telemetry field.
    pub fn reads_telemetry(&self) -> bool {
        self.paths.iter().any(|p| p.root == Root::Telemetry)
    }

    /// Whether the rule reads the twin's job executions (`job.id`, `job.status`).
    pub fn reads_job(&self) -> bool {
        self.paths.iter().any(|p| p.root == Root::Job)
    }

    /// Whether the rule reads the device's connectivity (`device.connected`).
    pub fn reads_device(&self) -> bool {
        self.paths.iter().any(|p| p.root == Root::Device)
    }
}

/// Limits that bound what a rule costs to evaluate and keep.
pub mod limits {
    /// Rules attached to one twin (its type's and its own).
    pub const RULES_PER_TWIN: usize = 32;
    /// Expression nodes in one rule.
    pub const NODES_PER_RULE: usize = 512;
    /// Windows in one rule.
    pub const WINDOWS_PER_RULE: usize = 8;
    /// `rising`/`falling` in one rule.
    pub const EDGES_PER_RULE: usize = 16;
    /// Actions in one block.
    pub const ACTIONS_PER_BLOCK: usize = 32;
    /// Longest window, `for`, `cooldown` or command timeout: one day.
    pub const LONGEST_MS: u64 = 86_400_000;
    /// Buckets a window keeps (its resolution is its length divided by this).
    pub const WINDOW_BUCKETS: u64 = 60;
    /// Children a twin keeps values of.
    pub const CHILDREN: usize = 1_000;
    /// Commands a rule waits on at once.
    pub const PENDING_COMMANDS: usize = 16;
    /// Longest rendered string, bytes.
    pub const STRING_BYTES: usize = 1_024;
    /// Source size of one rule file, bytes.
    pub const SOURCE_BYTES: usize = 64 * 1_024;
}

// ---- tests written in the language, compiled ------------------------------------------

/// A compiled test.
#[derive(Clone, Debug, PartialEq)]
pub struct CompiledTest {
    /// Its name.
    pub name: String,
    /// Its steps, in time order.
    pub steps: Vec<TestStep>,
}

/// A step at a virtual time.
#[derive(Clone, Debug, PartialEq)]
pub struct TestStep {
    /// Time from the test's start, ms.
    pub at_ms: u64,
    /// What happens.
    pub input: TestInput,
    /// Where the step is written.
    pub line: usize,
    /// Its column.
    pub column: usize,
}

/// What a step does.
#[derive(Clone, Debug, PartialEq)]
pub enum TestInput {
    /// A telemetry sample.
    Telemetry(Value),
    /// The device reports.
    Report(Value),
    /// An app sets desired state.
    Desire(Value),
    /// A child's `reported` changes.
    Child(String, Value),
    /// The device replies to a command.
    Reply(String, Value),
    /// The device connects (`true`) or disconnects.
    Presence(bool),
    /// The device takes a job's execution to a status.
    Job(String, String),
    /// An expectation (`true`: `expect no …`).
    Expect(bool, Probe),
}

/// What an expectation looks at.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    /// An alert's state.
    Alert(String, Option<AlertState>),
    /// A command sent since the last matching expectation.
    Command(String),
    /// An event emitted since the last matching expectation.
    Event(String),
    /// A condition over the twin, with the fields it reads.
    That(Expr, Vec<PathRef>),
}
