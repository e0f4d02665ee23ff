//! The checker and compiler, in one pass over the syntax tree: names and types against the
//! device type's JSON Schemas, values that may be missing, edges, windows and children where
//! they may appear, the cost bounds; and the compiled rules and tests.

use crate::{
    ast::{self, BinOp, ExprKind, Root, Section, UnOp},
    diag::{Diagnostics, Span},
    ir::{self, Agg, CompiledRule, PathRef, RuleTarget, TemplatePart, Val, WindowSpec, limits},
    ir::{CompiledTest, Probe, TestInput, TestStep},
    schema::{self, Field, Ty},
};
use std::{collections::BTreeSet, sync::Arc};
use twin_core::Schemas;

/// What the checker may ask about the deployment.
pub trait Catalog {
    /// A device type's schemas; `None` when no type of that name is registered.
    fn device_type(&self, name: &str) -> Option<Schemas>;
    /// A thing's device type: `None` when no such thing is registered, `Some(None)` for a
    /// thing without a type.
    fn thing_type(&self, name: &str) -> Option<Option<String>>;
}

/// No deployment to ask (the CLI): types and things are taken on trust and fields are not
/// checked against schemas.
#[derive(Clone, Copy, Debug, Default)]
pub struct Offline;

impl Catalog for Offline {
    fn device_type(&self, _: &str) -> Option<Schemas> {
        None
    }
    fn thing_type(&self, _: &str) -> Option<Option<String>> {
        None
    }
}

/// What a successful check produced.
#[derive(Clone, Debug, Default)]
pub struct Program {
    /// The rules.
    pub rules: Vec<Arc<CompiledRule>>,
    /// The tests.
    pub tests: Vec<CompiledTest>,
}

pub(crate) fn compile(
    source: &str,
    file: &ast::File,
    catalog: &dyn Catalog,
    online: bool,
    diags: &mut Diagnostics<'_>,
) -> Program {
    let mut program = Program::default();
    let mut names = BTreeSet::new();
    if file.rules.len() > limits::RULES_PER_TWIN {
        diags
            .error(
                "E030",
                file.rules[limits::RULES_PER_TWIN].span,
                format!("more than {} rules in one file", limits::RULES_PER_TWIN),
            )
            .hint("a twin runs at most this many rules");
    }
    for rule in &file.rules {
        if !rule.name.text.is_empty() && !names.insert(rule.name.text.clone()) {
            diags
                .error(
                    "E013",
                    rule.name.span,
                    format!("a rule named `{}` is already defined", rule.name.text),
                )
                .hint("rule names are unique");
        }
        let schemas = target_schemas(rule, catalog, online, diags);
        let children = rule.children.as_ref().map(|t| {
            let found = catalog.device_type(&t.text);
            if online && found.is_none() {
                diags.error(
                    "E020",
                    t.span,
                    format!("device type `{}` is not registered", t.text),
                );
            }
            found.unwrap_or_default()
        });
        let mut c = RuleCompiler {
            diags,
            schemas: schemas.unwrap_or_default(),
            children: rule.children.as_ref().map(|_| children.unwrap_or_default()),
            paths: Vec::new(),
            windows: Vec::new(),
            edges: 0,
            nodes: 0,
            rule_span: rule.span,
        };
        if let Some(compiled) = c.rule(source, rule) {
            program.rules.push(Arc::new(compiled));
        }
    }
    for test in &file.tests {
        let mut c = RuleCompiler {
            diags,
            schemas: Schemas::default(),
            children: None,
            paths: Vec::new(),
            windows: Vec::new(),
            edges: 0,
            nodes: 0,
            rule_span: test.span,
        };
        if let Some(compiled) = c.test(test) {
            program.tests.push(compiled);
        }
    }
    program
}

fn target_schemas(
    rule: &ast::Rule,
    catalog: &dyn Catalog,
    online: bool,
    diags: &mut Diagnostics<'_>,
) -> Option<Schemas> {
    match &rule.target {
        Some(ast::Target::Type(t)) => {
            let found = catalog.device_type(&t.text);
            if online && found.is_none() {
                diags
                    .error(
                        "E020",
                        t.span,
                        format!("device type `{}` is not registered", t.text),
                    )
                    .hint("register it with `PUT /v1/types/NAME` first");
            }
            found
        }
        Some(ast::Target::Thing(name)) => match catalog.thing_type(&name.text) {
            Some(Some(t)) => catalog.device_type(&t),
            Some(None) => None,
            None => {
                if online {
                    diags.error(
                        "E020",
                        name.span,
                        format!("thing `{}` is not registered", name.text),
                    );
                }
                None
            }
        },
        None => None,
    }
}

/// Where an expression appears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// `when` / `clear when`: edges allowed.
    Condition,
    /// An action's value.
    Action,
    /// A test's expectation.
    Test,
}

struct RuleCompiler<'c, 'd> {
    diags: &'c mut Diagnostics<'d>,
    schemas: Schemas,
    children: Option<Schemas>,
    paths: Vec<PathRef>,
    windows: Vec<WindowSpec>,
    edges: u16,
    nodes: usize,
    rule_span: Span,
}

/// An expression's static facts.
#[derive(Clone, Copy, Debug)]
struct Facts {
    ty: Ty,
    /// It may be missing at run time.
    maybe_missing: bool,
    /// It contains `rising`/`falling`.
    edge: bool,
}

impl Facts {
    fn present(ty: Ty) -> Facts {
        Facts {
            ty,
            maybe_missing: false,
            edge: false,
        }
    }
}

type Narrowed = BTreeSet<String>;

impl RuleCompiler<'_, '_> {
    fn rule(&mut self, source: &str, rule: &ast::Rule) -> Option<CompiledRule> {
        let target = match &rule.target {
            Some(ast::Target::Type(t)) => RuleTarget::Type(t.text.clone()),
            Some(ast::Target::Thing(t)) => RuleTarget::Thing(t.text.clone()),
            None => RuleTarget::Type(String::new()),
        };
        let Some(when) = &rule.when else {
            if rule.broken {
                return None;
            }
            self.diags
                .error(
                    "E010",
                    rule.name.span,
                    format!("rule `{}` has no `when` clause", rule.name.text),
                )
                .hint("add `when CONDITION` saying when it fires");
            return None;
        };
        let when_hold = self.hold(when.hold);
        let no_narrowing = Narrowed::new();
        let (when_expr, when_facts) = self.condition(&when.expr, &no_narrowing);
        if when_facts.edge && when.hold.is_some_and(|h| h.ms > 0) {
            self.diags
                .error(
                    "E025",
                    when.hold.map_or(when.expr.span, |h| h.span),
                    "an edge (`rising`, `falling`) lasts an instant and cannot be held",
                )
                .hint("drop `for`, or compare levels instead of edges");
        }
        let clear = rule.clear.as_ref().map(|clear| {
            let hold = self.hold(clear.hold);
            let (expr, facts) = self.condition(&clear.expr, &no_narrowing);
            if facts.edge && clear.hold.is_some_and(|h| h.ms > 0) {
                self.diags.error(
                    "E025",
                    clear.hold.map_or(clear.expr.span, |h| h.span),
                    "an edge (`rising`, `falling`) lasts an instant and cannot be held",
                );
            }
            (expr, hold)
        });
        let cooldown = self.hold(rule.cooldown);
        if rule.then.is_empty() && !rule.broken {
            self.diags
                .error(
                    "E011",
                    rule.name.span,
                    format!("rule `{}` has no `then` actions", rule.name.text),
                )
                .hint("add `then { … }` with what to do when it fires");
        }
        let fired = narrow_true(&when.expr);
        let then = self.actions(&rule.then, &fired, 0);
        let cleared = rule
            .clear
            .as_ref()
            .map(|c| narrow_true(&c.expr))
            .unwrap_or_default();
        let on_clear = self.actions(&rule.on_clear, &cleared, 0);
        if self.nodes > limits::NODES_PER_RULE {
            self.diags
                .error(
                    "E031",
                    rule.name.span,
                    format!(
                        "rule `{}` is too large: {} expression nodes",
                        rule.name.text, self.nodes
                    ),
                )
                .hint(format!(
                    "at most {}; split it into several rules",
                    limits::NODES_PER_RULE
                ));
        }
        if rule.target.is_none() || rule.name.text.is_empty() || self.diags.has_errors() {
            return None;
        }
        let text = &source[rule.span.start.min(source.len())..rule.span.end.min(source.len())];
        Some(CompiledRule {
            name: Arc::from(rule.name.text.as_str()),
            hash: xxhash_rust::xxh3::xxh3_64(text.as_bytes()),
            target,
            children_type: rule.children.as_ref().map(|c| c.text.clone()),
            edge_triggered: when_facts.edge,
            when: when_expr,
            when_hold_ms: when_hold,
            clear,
            cooldown_ms: cooldown,
            then,
            on_clear,
            paths: std::mem::take(&mut self.paths),
            windows: std::mem::take(&mut self.windows),
            edges: self.edges,
            source: text.to_owned(),
        })
    }

    fn hold(&mut self, d: Option<ast::Dur>) -> u64 {
        let Some(d) = d else { return 0 };
        if d.ms > limits::LONGEST_MS {
            self.diags
                .error("E029", d.span, "durations are at most one day")
                .hint("write at most `24h`");
            return limits::LONGEST_MS;
        }
        d.ms
    }

    /// A condition: boolean, and never missing unless handled.
    fn condition(&mut self, e: &ast::Expr, narrowed: &Narrowed) -> (ir::Expr, Facts) {
        let (expr, facts) = self.expr(e, narrowed, Place::Condition);
        if !facts.ty.fits(Ty::Bool) {
            self.diags
                .error(
                    "E021",
                    e.span,
                    format!("a condition must be a boolean, not {}", facts.ty.describe()),
                )
                .hint("compare it: `… > 30`, `… == \"open\"`");
        }
        (expr, facts)
    }

    fn node(&mut self) {
        self.nodes += 1;
    }

    fn path_slot(&mut self, path: &ast::Path) -> u16 {
        let fields: Vec<Arc<str>> = path
            .fields
            .iter()
            .map(|f| Arc::from(f.text.as_str()))
            .collect();
        if let Some(i) = self
            .paths
            .iter()
            .position(|p| p.root == path.root && p.fields == fields)
        {
            return i as u16;
        }
        let key = fields.iter().map(|f| &**f).collect::<Vec<_>>().join(".");
        self.paths.push(PathRef {
            root: path.root,
            fields,
            key: Arc::from(key),
        });
        (self.paths.len() - 1) as u16
    }

    /// A field of a root with fixed fields (`device.connected`, `job.status`): its type, or a
    /// diagnostic naming the fields there are.
    fn fixed_field(&mut self, path: &ast::Path, what: &str, fields: &[(&str, Ty)]) -> Facts {
        let ty = match path.fields.as_slice() {
            [field] => fields
                .iter()
                .find(|(name, _)| *name == field.text)
                .map(|(_, ty)| *ty),
            _ => None,
        };
        if ty.is_none() {
            let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
            self.diags
                .error(
                    "E020",
                    path.span,
                    format!("`{}` is not a field of {what}", path.display()),
                )
                .hint(format!("{what} has: {}", names.join(", ")));
        }
        Facts {
            ty: ty.unwrap_or(Ty::Any),
            maybe_missing: false,
            edge: false,
        }
    }

    /// Checks a field against its schema; its type and whether it may be missing.
    fn field(&mut self, path: &ast::Path) -> Facts {
        let (schema, section) = match path.root {
            Root::Telemetry => (self.schemas.telemetry.as_ref(), "telemetry"),
            Root::Reported => (self.schemas.reported.as_ref(), "reported"),
            Root::Desired => (self.schemas.desired.as_ref(), "desired"),
            Root::Children => (
                self.children.as_ref().and_then(|c| c.reported.as_ref()),
                "the children's reported",
            ),
            // Never missing: `false` before the first connect, "" before the first execution.
            Root::Device => {
                return self.fixed_field(path, "the device", &[("connected", Ty::Bool)]);
            }
            Root::Job => {
                return self.fixed_field(path, "the job", &[("id", Ty::Str), ("status", Ty::Str)]);
            }
        };
        let keys: Vec<&str> = path.fields.iter().map(|f| f.text.as_str()).collect();
        match schema::field(schema, &keys) {
            Field::Known { ty, required } => Facts {
                ty,
                maybe_missing: !required,
                edge: false,
            },
            Field::Unknown { siblings } => {
                let d = self.diags.error(
                    "E020",
                    path.span,
                    format!("`{}` is not a field of {section}", path.display()),
                );
                if let Some(close) = closest(keys.last().copied().unwrap_or(""), &siblings) {
                    d.hint(format!("did you mean `{close}`?"));
                } else if !siblings.is_empty() {
                    d.hint(format!("the schema has: {}", siblings.join(", ")));
                }
                Facts {
                    ty: Ty::Any,
                    maybe_missing: false,
                    edge: false,
                }
            }
            Field::NotDescribed => {
                self.diags
                    .warning(
                        "W001",
                        path.span,
                        format!(
                            "`{}` is not described by the {section} schema",
                            path.display()
                        ),
                    )
                    .hint("add it to the device type's schema to have its type checked");
                Facts {
                    ty: Ty::Any,
                    maybe_missing: true,
                    edge: false,
                }
            }
            Field::Unchecked => Facts {
                ty: Ty::Any,
                maybe_missing: true,
                edge: false,
            },
        }
    }

    fn missing_error(&mut self, e: &ast::Expr, ty: Ty) {
        let shown = match &e.kind {
            ExprKind::Path(p) => format!("`{}`", p.display()),
            _ => "this value".to_owned(),
        };
        let d = self
            .diags
            .error("E022", e.span, format!("{shown} may be missing here"));
        let default = match ty {
            Ty::Str => "\"\"",
            Ty::Bool => "false",
            _ => "0",
        };
        match &e.kind {
            ExprKind::Path(p) => d.hint(format!(
                "handle it: `exists({0}) and …`, or give a default: `{0} ?? {default}`",
                p.display()
            )),
            _ => d.hint("give a default with `?? value`"),
        };
    }

    /// A value that must be present (operands, arguments, values set).
    fn present(&mut self, e: &ast::Expr, narrowed: &Narrowed, place: Place) -> (ir::Expr, Facts) {
        let (expr, facts) = self.expr(e, narrowed, place);
        // In a test's expectation a missing value simply fails the expectation.
        if facts.maybe_missing && place != Place::Test {
            self.missing_error(e, facts.ty);
        }
        (expr, facts)
    }

    fn expr(&mut self, e: &ast::Expr, narrowed: &Narrowed, place: Place) -> (ir::Expr, Facts) {
        self.node();
        match &e.kind {
            ExprKind::Num(n) => (ir::Expr::Const(Val::Num(*n)), Facts::present(Ty::Num)),
            ExprKind::Bool(b) => (ir::Expr::Const(Val::Bool(*b)), Facts::present(Ty::Bool)),
            ExprKind::Null => (ir::Expr::Const(Val::Null), Facts::present(Ty::Null)),
            ExprKind::Error => (ir::Expr::Const(Val::Missing), Facts::present(Ty::Any)),
            ExprKind::Str(t) => (self.template(t, narrowed, place), Facts::present(Ty::Str)),
            ExprKind::Object(fields) => {
                let mut out = Vec::with_capacity(fields.len());
                for (k, v) in fields {
                    let (expr, _) = self.present(v, narrowed, place);
                    out.push((Arc::from(k.text.as_str()), expr));
                }
                (ir::Expr::Object(out), Facts::present(Ty::Object))
            }
            ExprKind::Path(path) => {
                if path.root == Root::Children {
                    self.diags
                        .error(
                            "E028",
                            path.span,
                            "children's values are read through an aggregate",
                        )
                        .hint("write `avg(children.reported.x)`, `max(…)`, `count(children)`…");
                    return (ir::Expr::Const(Val::Missing), Facts::present(Ty::Any));
                }
                let mut facts = self.field(path);
                if narrowed.contains(&path.display()) {
                    facts.maybe_missing = false;
                }
                if matches!(facts.ty, Ty::Object | Ty::Array) && place != Place::Test {
                    self.diags
                        .error(
                            "E021",
                            path.span,
                            format!(
                                "`{}` is {}; rules compare numbers, strings and booleans",
                                path.display(),
                                facts.ty.describe()
                            ),
                        )
                        .hint("name a field inside it");
                }
                (ir::Expr::Path(self.path_slot(path)), facts)
            }
            ExprKind::Unary(UnOp::Not, inner) => {
                let (expr, facts) = self.present(inner, narrowed, place);
                self.expect_ty(inner, facts, Ty::Bool, "`not`");
                (
                    ir::Expr::Not(Box::new(expr)),
                    Facts {
                        edge: facts.edge,
                        ..Facts::present(Ty::Bool)
                    },
                )
            }
            ExprKind::Unary(UnOp::Neg, inner) => {
                let (expr, facts) = self.present(inner, narrowed, place);
                self.expect_ty(inner, facts, Ty::Num, "`-`");
                (ir::Expr::Neg(Box::new(expr)), Facts::present(Ty::Num))
            }
            ExprKind::Binary(op, a, b) => self.binary(*op, a, b, narrowed, place, e.span),
            ExprKind::Call { name, args, over } => {
                self.call(name, args, *over, narrowed, place, e.span)
            }
        }
    }

    fn expect_ty(&mut self, e: &ast::Expr, facts: Facts, want: Ty, what: &str) {
        if !facts.ty.fits(want) {
            self.diags.error(
                "E021",
                e.span,
                format!(
                    "{what} takes {}, not {}",
                    want.describe(),
                    facts.ty.describe()
                ),
            );
        }
    }

    fn binary(
        &mut self,
        op: BinOp,
        a: &ast::Expr,
        b: &ast::Expr,
        narrowed: &Narrowed,
        place: Place,
        span: Span,
    ) -> (ir::Expr, Facts) {
        let bin = |x, y| ir::Expr::Bin(op, Box::new(x), Box::new(y));
        match op {
            BinOp::And | BinOp::Or => {
                let (left, lf) = self.present(a, narrowed, place);
                let mut inner = narrowed.clone();
                inner.extend(if op == BinOp::And {
                    narrow_true(a)
                } else {
                    narrow_false(a)
                });
                let (right, rf) = self.present(b, &inner, place);
                self.expect_ty(a, lf, Ty::Bool, &format!("`{}`", op.as_str()));
                self.expect_ty(b, rf, Ty::Bool, &format!("`{}`", op.as_str()));
                (
                    bin(left, right),
                    Facts {
                        edge: lf.edge || rf.edge,
                        ..Facts::present(Ty::Bool)
                    },
                )
            }
            BinOp::Coalesce => {
                let (left, lf) = self.expr(a, narrowed, place);
                let (right, rf) = self.expr(b, narrowed, place);
                if !lf.maybe_missing {
                    self.diags
                        .warning(
                            "W002",
                            a.span,
                            "this value is never missing: `??` has no effect",
                        )
                        .hint("drop `?? …`");
                }
                if !lf.ty.fits(rf.ty) {
                    self.diags.error(
                        "E021",
                        b.span,
                        format!(
                            "the default is {} but the value is {}",
                            rf.ty.describe(),
                            lf.ty.describe()
                        ),
                    );
                }
                let ty = if lf.ty == Ty::Any { rf.ty } else { lf.ty };
                (
                    bin(left, right),
                    Facts {
                        ty,
                        maybe_missing: rf.maybe_missing,
                        edge: lf.edge || rf.edge,
                    },
                )
            }
            BinOp::Eq | BinOp::Ne => {
                let (left, lf) = self.present(a, narrowed, place);
                let (right, rf) = self.present(b, narrowed, place);
                if !lf.ty.fits(rf.ty) {
                    self.diags
                        .error(
                            "E021",
                            span,
                            format!(
                                "`{}` compares {} with {}",
                                op.as_str(),
                                lf.ty.describe(),
                                rf.ty.describe()
                            ),
                        )
                        .hint("compare values of the same type");
                }
                (
                    bin(left, right),
                    Facts {
                        edge: lf.edge || rf.edge,
                        ..Facts::present(Ty::Bool)
                    },
                )
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let (left, lf) = self.present(a, narrowed, place);
                let (right, rf) = self.present(b, narrowed, place);
                let what = format!("`{}`", op.as_str());
                self.expect_ty(a, lf, Ty::Num, &what);
                self.expect_ty(b, rf, Ty::Num, &what);
                (
                    bin(left, right),
                    Facts {
                        edge: lf.edge || rf.edge,
                        ..Facts::present(Ty::Bool)
                    },
                )
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                let (left, lf) = self.present(a, narrowed, place);
                let (right, rf) = self.present(b, narrowed, place);
                let what = format!("`{}`", op.as_str());
                self.expect_ty(a, lf, Ty::Num, &what);
                self.expect_ty(b, rf, Ty::Num, &what);
                (bin(left, right), Facts::present(Ty::Num))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        name: &ast::Ident,
        args: &[ast::Expr],
        over: Option<ast::Dur>,
        narrowed: &Narrowed,
        place: Place,
        span: Span,
    ) -> (ir::Expr, Facts) {
        let f = name.text.as_str();
        let arity = |c: &mut Self, n: usize| {
            if args.len() != n {
                c.diags.error(
                    "E024",
                    span,
                    format!(
                        "`{f}` takes {n} argument{}, not {}",
                        if n == 1 { "" } else { "s" },
                        args.len()
                    ),
                );
                false
            } else {
                true
            }
        };
        let fail = (ir::Expr::Const(Val::Missing), Facts::present(Ty::Any));
        if over.is_some()
            && matches!(
                f,
                "exists" | "missing" | "rising" | "falling" | "abs" | "round"
            )
        {
            self.diags
                .error("E024", span, format!("`{f}` takes no window"))
                .hint("windows go with avg, min, max, sum and count");
        }
        match f {
            "exists" | "missing" => {
                if !arity(self, 1) {
                    return fail;
                }
                let ExprKind::Path(path) = &args[0].kind else {
                    self.diags
                        .error("E024", args[0].span, format!("`{f}` takes a field"));
                    return fail;
                };
                if path.root == Root::Children {
                    self.diags.error(
                        "E028",
                        path.span,
                        "children's values are read through an aggregate",
                    );
                    return fail;
                }
                let facts = self.field(path);
                if !facts.maybe_missing && !narrowed.contains(&path.display()) {
                    self.diags
                        .warning(
                            "W002",
                            args[0].span,
                            format!("`{}` is never missing", path.display()),
                        )
                        .hint("the schema requires it");
                }
                let slot = self.path_slot(path);
                let exists = ir::Expr::Exists(slot);
                let expr = if f == "exists" {
                    exists
                } else {
                    ir::Expr::Not(Box::new(exists))
                };
                (expr, Facts::present(Ty::Bool))
            }
            "rising" | "falling" => {
                if !arity(self, 1) {
                    return fail;
                }
                if place != Place::Condition {
                    self.diags
                        .error(
                            "E025",
                            span,
                            format!("`{f}` can only be used in `when` and `clear when`"),
                        )
                        .hint("edges are changes between two evaluations of a condition");
                }
                let (arg, facts) = self.present(&args[0], narrowed, place);
                self.expect_ty(&args[0], facts, Ty::Bool, &format!("`{f}`"));
                if usize::from(self.edges) >= limits::EDGES_PER_RULE {
                    self.diags.error(
                        "E031",
                        span,
                        format!("at most {} edges in a rule", limits::EDGES_PER_RULE),
                    );
                }
                let slot = self.edges;
                self.edges = self.edges.saturating_add(1);
                (
                    ir::Expr::Edge {
                        slot,
                        rising: f == "rising",
                        arg: Box::new(arg),
                    },
                    Facts {
                        edge: true,
                        ..Facts::present(Ty::Bool)
                    },
                )
            }
            "abs" | "round" => {
                if !arity(self, 1) {
                    return fail;
                }
                let (arg, facts) = self.present(&args[0], narrowed, place);
                self.expect_ty(&args[0], facts, Ty::Num, &format!("`{f}`"));
                let expr = if f == "abs" {
                    ir::Expr::Abs(Box::new(arg))
                } else {
                    ir::Expr::Round(Box::new(arg))
                };
                (expr, Facts::present(Ty::Num))
            }
            "avg" | "min" | "max" | "sum" | "count" => {
                let agg = match f {
                    "avg" => Agg::Avg,
                    "min" => Agg::Min,
                    "max" => Agg::Max,
                    "sum" => Agg::Sum,
                    _ => Agg::Count,
                };
                // `min(a, b)` / `max(a, b)`.
                if args.len() == 2 && matches!(agg, Agg::Min | Agg::Max) && over.is_none() {
                    let (a, af) = self.present(&args[0], narrowed, place);
                    let (b, bf) = self.present(&args[1], narrowed, place);
                    self.expect_ty(&args[0], af, Ty::Num, &format!("`{f}`"));
                    self.expect_ty(&args[1], bf, Ty::Num, &format!("`{f}`"));
                    return (
                        ir::Expr::MinMax(agg == Agg::Max, Box::new(a), Box::new(b)),
                        Facts::present(Ty::Num),
                    );
                }
                if !arity(self, 1) {
                    return fail;
                }
                let ExprKind::Path(path) = &args[0].kind else {
                    self.diags
                        .error("E024", args[0].span, format!("`{f}` aggregates a field"))
                        .hint(format!(
                            "`{f}(telemetry.x over 10m)` or `{f}(children.reported.x)`"
                        ));
                    return fail;
                };
                // Over nothing an average, minimum or maximum is missing; a sum or count is 0.
                let result = Facts {
                    ty: Ty::Num,
                    maybe_missing: matches!(agg, Agg::Avg | Agg::Min | Agg::Max),
                    edge: false,
                };
                match (path.root, over) {
                    (Root::Children, None) => {
                        if self.children.is_none() {
                            self.diags
                                .error("E028", path.span, "this rule does not declare children")
                                .hint("add `children of type TYPE` to the rule");
                        }
                        if path.fields.is_empty() {
                            if agg != Agg::Count {
                                self.diags
                                    .error(
                                        "E024",
                                        path.span,
                                        format!("`{f}(children)` aggregates nothing"),
                                    )
                                    .hint(format!("name a field: `{f}(children.reported.x)`"));
                            }
                            return (ir::Expr::ChildCount, Facts::present(Ty::Num));
                        }
                        let facts = self.field(path);
                        if agg != Agg::Count {
                            self.expect_ty(&args[0], facts, Ty::Num, &format!("`{f}`"));
                        }
                        (ir::Expr::Children(agg, self.path_slot(path)), result)
                    }
                    (Root::Telemetry, Some(d)) => {
                        if d.ms == 0 || d.ms > limits::LONGEST_MS {
                            self.diags
                                .error(
                                    "E027",
                                    d.span,
                                    "a window lasts more than 0 and at most one day",
                                )
                                .hint("write e.g. `over 10m`");
                        }
                        let facts = self.field(path);
                        if agg != Agg::Count {
                            self.expect_ty(&args[0], facts, Ty::Num, &format!("`{f}`"));
                        }
                        if self.windows.len() >= limits::WINDOWS_PER_RULE {
                            self.diags.error(
                                "E031",
                                span,
                                format!("at most {} windows in a rule", limits::WINDOWS_PER_RULE),
                            );
                        }
                        let slot = self.path_slot(path);
                        let spec = WindowSpec {
                            path: slot,
                            over_ms: d.ms.clamp(1, limits::LONGEST_MS),
                        };
                        let index = match self.windows.iter().position(|w| *w == spec) {
                            Some(i) => i,
                            None => {
                                self.windows.push(spec);
                                self.windows.len() - 1
                            }
                        };
                        (ir::Expr::Window(agg, index as u16), result)
                    }
                    (Root::Telemetry, None) => {
                        self.diags
                            .error(
                                "E026",
                                span,
                                format!("`{f}` of a telemetry field needs a window"),
                            )
                            .hint(format!("write `{f}({} over 10m)`", path.display()));
                        fail
                    }
                    (_, Some(_)) => {
                        self.diags
                            .error("E026", path.span, "windows are kept over telemetry fields")
                            .hint("write `telemetry.FIELD`");
                        fail
                    }
                    (_, None) => {
                        self.diags
                            .error("E024", path.span, format!("`{f}` aggregates telemetry over a window or the children's values"))
                            .hint(format!("`{f}(telemetry.x over 10m)` or `{f}(children.reported.x)`"));
                        fail
                    }
                }
            }
            _ => {
                let d = self
                    .diags
                    .error("E023", name.span, format!("unknown function `{f}`"));
                const FUNCTIONS: &[&str] = &[
                    "exists", "missing", "rising", "falling", "abs", "round", "avg", "min", "max",
                    "sum", "count",
                ];
                let names: Vec<String> = FUNCTIONS.iter().map(|s| (*s).to_owned()).collect();
                match closest(f, &names) {
                    Some(close) => d.hint(format!("did you mean `{close}`?")),
                    None => d.hint(format!("functions: {}", FUNCTIONS.join(", "))),
                };
                fail
            }
        }
    }

    fn template(&mut self, t: &ast::Template, narrowed: &Narrowed, place: Place) -> ir::Expr {
        let mut parts = Vec::with_capacity(t.parts.len());
        for part in &t.parts {
            match part {
                ast::Part::Text(text) => parts.push(TemplatePart::Text(Arc::from(text.as_str()))),
                // An interpolated value may be missing: it renders as `missing`.
                ast::Part::Expr(e) => {
                    let (expr, facts) = self.expr(e, narrowed, place);
                    if matches!(facts.ty, Ty::Object | Ty::Array) {
                        self.diags.error(
                            "E021",
                            e.span,
                            "only numbers, strings and booleans can be written into a string",
                        );
                    }
                    parts.push(TemplatePart::Expr(expr));
                }
            }
        }
        match parts.as_slice() {
            [TemplatePart::Text(text)] => ir::Expr::Const(Val::Str(text.clone())),
            [] => ir::Expr::Const(Val::Str(Arc::from(""))),
            _ => ir::Expr::Template(parts),
        }
    }

    fn actions(
        &mut self,
        actions: &[ast::Action],
        narrowed: &Narrowed,
        depth: usize,
    ) -> Vec<ir::Action> {
        if actions.len() > limits::ACTIONS_PER_BLOCK {
            let span = action_span(&actions[limits::ACTIONS_PER_BLOCK]);
            self.diags.error(
                "E031",
                span,
                format!("at most {} actions in a block", limits::ACTIONS_PER_BLOCK),
            );
        }
        let mut alerts = BTreeSet::new();
        let mut out = Vec::with_capacity(actions.len());
        for action in actions {
            match action {
                ast::Action::Set {
                    section,
                    path,
                    value,
                    span,
                } => {
                    let (expr, facts) = self.present(value, narrowed, Place::Action);
                    let schema = match section {
                        Section::Desired => self.schemas.desired.as_ref(),
                        Section::Reported => self.schemas.reported.as_ref(),
                    };
                    let keys: Vec<&str> = path.iter().map(|f| f.text.as_str()).collect();
                    let shown = format!(
                        "{}.{}",
                        if *section == Section::Desired {
                            "desired"
                        } else {
                            "reported"
                        },
                        keys.join(".")
                    );
                    match schema::field(schema, &keys) {
                        Field::Known { ty, required } => {
                            if facts.ty == Ty::Null && required {
                                self.diags.error(
                                    "E021",
                                    *span,
                                    format!(
                                        "`{shown}` is required by the schema and cannot be removed"
                                    ),
                                );
                            } else if facts.ty != Ty::Null && !facts.ty.fits(ty) {
                                self.diags.error(
                                    "E021",
                                    value.span,
                                    format!(
                                        "`{shown}` is {} but this is {}",
                                        ty.describe(),
                                        facts.ty.describe()
                                    ),
                                );
                            }
                        }
                        Field::Unknown { siblings } => {
                            let d = self.diags.error(
                                "E020",
                                *span,
                                format!("`{shown}` is not a field the schema allows"),
                            );
                            if let Some(close) =
                                closest(keys.last().copied().unwrap_or(""), &siblings)
                            {
                                d.hint(format!("did you mean `{close}`?"));
                            }
                        }
                        Field::NotDescribed | Field::Unchecked => {}
                    }
                    if matches!(facts.ty, Ty::Object) {
                        self.diags
                            .error("E021", value.span, "set one field at a time");
                    }
                    out.push(ir::Action::Set {
                        section: *section,
                        path: path.iter().map(|f| Arc::from(f.text.as_str())).collect(),
                        value: expr,
                    });
                }
                ast::Action::Command {
                    name,
                    payload,
                    timeout,
                    on_timeout,
                    span,
                } => {
                    let payload = self.payload(payload, narrowed);
                    let timeout_ms = match timeout {
                        Some(t) if t.ms == 0 || t.ms > limits::LONGEST_MS => {
                            self.diags.error(
                                "E029",
                                t.span,
                                "a command's timeout is more than 0 and at most one day",
                            );
                            30_000
                        }
                        Some(t) => t.ms,
                        None => 30_000,
                    };
                    if depth > 0 && !on_timeout.is_empty() {
                        self.diags
                            .error("E031", *span, "`on timeout` cannot nest")
                            .hint("a command sent on timeout cannot have its own `on timeout`");
                    }
                    let on_timeout = self.actions(on_timeout, &Narrowed::new(), depth + 1);
                    out.push(ir::Action::Command {
                        name: Arc::from(name.text.as_str()),
                        payload,
                        timeout_ms,
                        on_timeout,
                    });
                }
                ast::Action::Alert {
                    name,
                    severity,
                    message,
                    ..
                } => {
                    if !alerts.insert(name.text.clone()) {
                        self.diags.error(
                            "E012",
                            name.span,
                            format!("alert `{}` is raised twice in this block", name.text),
                        );
                    }
                    let message = self.template(message, narrowed, Place::Action);
                    out.push(ir::Action::Alert {
                        name: Arc::from(name.text.as_str()),
                        severity: *severity,
                        message,
                    });
                }
                ast::Action::Emit { kind, payload, .. } => {
                    let payload = self.payload(payload, narrowed);
                    out.push(ir::Action::Emit {
                        kind: Arc::from(kind.as_str()),
                        payload,
                    });
                }
            }
        }
        out
    }

    fn payload(&mut self, fields: &[(ast::Ident, ast::Expr)], narrowed: &Narrowed) -> ir::Expr {
        let mut out = Vec::with_capacity(fields.len());
        for (k, v) in fields {
            let (expr, _) = self.present(v, narrowed, Place::Action);
            out.push((Arc::from(k.text.as_str()), expr));
        }
        ir::Expr::Object(out)
    }

    // ---- tests ---------------------------------------------------------------------------

    fn test(&mut self, test: &ast::Test) -> Option<CompiledTest> {
        let mut steps = Vec::with_capacity(test.steps.len());
        let mut last = 0;
        for step in &test.steps {
            if step.at.ms < last {
                self.diags
                    .error("E050", step.at.span, "steps go forward in time")
                    .hint("order the steps by their `at` time");
            }
            last = last.max(step.at.ms);
            let input = match &step.kind {
                ast::StepKind::Telemetry(obj) => self.constant(obj).map(TestInput::Telemetry),
                ast::StepKind::Presence(connected) => Some(TestInput::Presence(*connected)),
                ast::StepKind::Job(id, status) => {
                    if !matches!(
                        status.as_str(),
                        "IN_PROGRESS" | "SUCCEEDED" | "FAILED" | "REJECTED"
                    ) {
                        self.diags
                            .error("E021", step.span, format!("a device takes an execution to in_progress, succeeded, failed or rejected, not {}", status.to_ascii_lowercase()));
                    }
                    Some(TestInput::Job(id.clone(), status.clone()))
                }
                ast::StepKind::Report(obj) => self.constant(obj).map(TestInput::Report),
                ast::StepKind::Desire(obj) => self.constant(obj).map(TestInput::Desire),
                ast::StepKind::Child(name, obj) => self
                    .constant(obj)
                    .map(|v| TestInput::Child(name.text.clone(), v)),
                ast::StepKind::Reply(name, obj) => {
                    let payload = match obj {
                        Some(obj) => self.constant(obj),
                        None => Some(serde_json::Value::Object(Default::default())),
                    };
                    payload.map(|p| TestInput::Reply(name.text.clone(), p))
                }
                ast::StepKind::Expect(negated, expectation) => {
                    let probe = match expectation {
                        ast::Expectation::Alert(name, state) => {
                            Some(Probe::Alert(name.text.clone(), *state))
                        }
                        ast::Expectation::Command(name) => Some(Probe::Command(name.text.clone())),
                        ast::Expectation::Event(kind, _) => Some(Probe::Event(kind.clone())),
                        ast::Expectation::That(e) => {
                            let (expr, facts) = self.expr(e, &Narrowed::new(), Place::Test);
                            if !facts.ty.fits(Ty::Bool) {
                                self.diags
                                    .error("E021", e.span, "an expectation is a condition");
                            }
                            Some(Probe::That(expr, std::mem::take(&mut self.paths)))
                        }
                    };
                    probe.map(|p| TestInput::Expect(*negated, p))
                }
            };
            if let Some(input) = input {
                let (line, column) = self.diags.line_col(step.span.start);
                steps.push(TestStep {
                    at_ms: step.at.ms,
                    input,
                    line,
                    column,
                });
            }
        }
        let _ = self.rule_span;
        Some(CompiledTest {
            name: test.name.clone(),
            steps,
        })
    }

    /// A test input: literals only.
    fn constant(&mut self, e: &ast::Expr) -> Option<serde_json::Value> {
        use serde_json::Value;
        Some(match &e.kind {
            ExprKind::Num(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
            ExprKind::Unary(UnOp::Neg, inner) => match &inner.kind {
                ExprKind::Num(n) => {
                    serde_json::Number::from_f64(-n).map_or(Value::Null, Value::Number)
                }
                _ => return self.not_constant(e),
            },
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Null => Value::Null,
            ExprKind::Str(t) => match t.parts.as_slice() {
                [] => Value::String(String::new()),
                [ast::Part::Text(s)] => Value::String(s.clone()),
                _ => return self.not_constant(e),
            },
            ExprKind::Object(fields) => {
                let mut map = serde_json::Map::new();
                for (k, v) in fields {
                    map.insert(k.text.clone(), self.constant(v)?);
                }
                Value::Object(map)
            }
            _ => return self.not_constant(e),
        })
    }

    fn not_constant(&mut self, e: &ast::Expr) -> Option<serde_json::Value> {
        self.diags
            .error("E051", e.span, "test inputs are literal values")
            .hint("write numbers, strings, booleans, null and `{…}`");
        None
    }
}

fn action_span(action: &ast::Action) -> Span {
    match action {
        ast::Action::Set { span, .. }
        | ast::Action::Command { span, .. }
        | ast::Action::Alert { span, .. }
        | ast::Action::Emit { span, .. } => *span,
    }
}

/// Fields known present when `e` is true.
fn narrow_true(e: &ast::Expr) -> Narrowed {
    match &e.kind {
        ExprKind::Call { name, args, .. } if name.text == "exists" && args.len() == 1 => {
            match &args[0].kind {
                ExprKind::Path(p) => [p.display()].into(),
                _ => Narrowed::new(),
            }
        }
        ExprKind::Binary(BinOp::And, a, b) => {
            let mut n = narrow_true(a);
            n.extend(narrow_true(b));
            n
        }
        ExprKind::Unary(UnOp::Not, inner) => narrow_false(inner),
        _ => Narrowed::new(),
    }
}

/// Fields known present when `e` is false.
fn narrow_false(e: &ast::Expr) -> Narrowed {
    match &e.kind {
        ExprKind::Call { name, args, .. } if name.text == "missing" && args.len() == 1 => {
            match &args[0].kind {
                ExprKind::Path(p) => [p.display()].into(),
                _ => Narrowed::new(),
            }
        }
        ExprKind::Binary(BinOp::Or, a, b) => {
            let mut n = narrow_false(a);
            n.extend(narrow_false(b));
            n
        }
        ExprKind::Unary(UnOp::Not, inner) => narrow_true(inner),
        _ => Narrowed::new(),
    }
}

/// The candidate closest to `word` by edit distance, if close enough to be a likely typo.
fn closest(word: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
