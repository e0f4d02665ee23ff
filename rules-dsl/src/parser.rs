//! A recursive-descent parser with error recovery: after an error it skips to the next clause,
//! action, step or item and goes on, so one check reports every syntax error. It never panics,
//! and nesting is bounded, so hostile input cannot exhaust the stack.

use crate::{
    ast::*,
    diag::{Diagnostics, Span},
    lexer::{self, Tok, Token},
};

/// Deepest expression nesting accepted.
pub const MAX_NESTING: usize = 32;

/// Parses `source`, reporting into `diags`.
pub fn parse(source: &str, diags: &mut Diagnostics<'_>) -> File {
    let tokens = lexer::lex(source);
    let mut parser = Parser {
        source,
        tokens,
        pos: 0,
        diags,
        depth: 0,
        open: 0,
    };
    parser.file()
}

struct Parser<'s, 'd, 'a> {
    source: &'s str,
    tokens: Vec<Token>,
    pos: usize,
    diags: &'d mut Diagnostics<'a>,
    depth: usize,
    /// Delimiters opened and not yet closed by the tokens consumed so far.
    open: usize,
}

/// Words that start a rule clause.
const CLAUSES: &[&str] = &["when", "clear", "cooldown", "then", "on", "children"];
/// Words that start an action.
const ACTIONS: &[&str] = &["set", "command", "alert", "emit"];

type Parsed<T> = Option<T>;

impl<'s> Parser<'s, '_, '_> {
    // ---- tokens -------------------------------------------------------------------------

    fn peek(&self) -> Token {
        self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, ahead: usize) -> Token {
        self.tokens[(self.pos + ahead).min(self.tokens.len() - 1)]
    }

    fn text(&self, token: Token) -> &'s str {
        let source: &'s str = self.source;
        &source[token.span.start..token.span.end]
    }

    fn bump(&mut self) -> Token {
        let token = self.peek();
        match token.tok {
            Tok::Eof => return token,
            Tok::LBrace | Tok::LParen | Tok::LBracket => self.open += 1,
            Tok::RBrace | Tok::RParen | Tok::RBracket => self.open = self.open.saturating_sub(1),
            _ => {}
        }
        self.pos += 1;
        token
    }

    fn at(&self, tok: Tok) -> bool {
        self.peek().tok == tok
    }

    fn at_word(&self, word: &str) -> bool {
        let token = self.peek();
        token.tok == Tok::Word && self.text(token) == word
    }

    fn eat(&mut self, tok: Tok) -> bool {
        if self.at(tok) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if self.at_word(word) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn prev_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.tokens[self.pos - 1].span.end
        }
    }

    /// Reports that `what` was expected at the current token.
    fn unexpected(&mut self, what: &str) {
        let token = self.peek();
        let found = match token.tok {
            Tok::Word => format!("`{}`", self.text(token)),
            Tok::Error => format!("`{}`", self.text(token)),
            other => other.describe().to_owned(),
        };
        let code = match token.tok {
            Tok::Error => "E004",
            Tok::Unterminated => "E002",
            _ => "E001",
        };
        let d = self
            .diags
            .error(code, token.span, format!("expected {what}, found {found}"));
        if token.tok == Tok::Unterminated {
            d.hint("close the string with `\"` on the same line");
        } else if token.tok == Tok::Error {
            d.hint("the language uses letters, digits, `_`, strings in double quotes and the operators + - * / % == != < <= > >= ??");
        }
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Parsed<Token> {
        if self.at(tok) {
            Some(self.bump())
        } else {
            self.unexpected(what);
            None
        }
    }

    fn expect_word(&mut self, word: &str) -> Parsed<Token> {
        if self.at_word(word) {
            Some(self.bump())
        } else {
            self.unexpected(&format!("`{word}`"));
            None
        }
    }

    fn ident(&mut self, what: &str) -> Parsed<Ident> {
        let token = self.peek();
        if token.tok == Tok::Word {
            self.bump();
            Some(Ident {
                text: self.text(token).to_owned(),
                span: token.span,
            })
        } else {
            self.unexpected(what);
            None
        }
    }

    /// A name written as a word or a string (thing names may hold `-` and `:`).
    fn name(&mut self, what: &str) -> Parsed<Ident> {
        let token = self.peek();
        if token.tok == Tok::Str {
            self.bump();
            return Some(Ident {
                text: unescape(self.text(token)),
                span: token.span,
            });
        }
        self.ident(what)
    }

    fn duration(&mut self) -> Parsed<Dur> {
        let token = self.peek();
        match token.tok {
            Tok::Duration => {
                self.bump();
                match lexer::duration_ms(self.text(token)) {
                    Some(ms) => Some(Dur {
                        ms,
                        span: token.span,
                    }),
                    None => {
                        self.diags
                            .error("E003", token.span, "this duration is too long");
                        None
                    }
                }
            }
            Tok::Number => {
                self.bump();
                self.diags
                    .error("E003", token.span, "a duration needs a unit")
                    .hint("write `500ms`, `30s`, `5m`, `2h` or `1d`");
                None
            }
            _ => {
                self.unexpected("a duration such as `30s` or `5m`");
                None
            }
        }
    }

    /// Skips tokens until, back at nesting `level` (the block being parsed), the next one is
    /// one of `words` or `stops`, or the `}` that closes the block (not consumed). Whatever
    /// the failed part opened is skipped whole.
    fn recover(&mut self, level: usize, words: &[&str], stops: &[Tok]) {
        loop {
            let token = self.peek();
            if token.tok == Tok::Eof {
                return;
            }
            if self.open <= level {
                match token.tok {
                    Tok::RBrace | Tok::RParen | Tok::RBracket => return,
                    Tok::Word if words.contains(&self.text(token)) => return,
                    tok if stops.contains(&tok) => return,
                    _ => {}
                }
            }
            self.bump();
        }
    }

    // ---- items --------------------------------------------------------------------------

    fn file(&mut self) -> File {
        let mut file = File::default();
        while !self.at(Tok::Eof) {
            if self.at_word("rule") {
                if let Some(rule) = self.rule() {
                    file.rules.push(rule);
                }
            } else if self.at_word("test") {
                if let Some(test) = self.test() {
                    file.tests.push(test);
                }
            } else {
                self.unexpected("`rule` or `test`");
                self.bump();
                self.recover(0, &["rule", "test"], &[]);
                // A stray `}` at the top level.
                if self.at(Tok::RBrace) {
                    self.bump();
                }
            }
        }
        file
    }

    fn rule(&mut self) -> Parsed<Rule> {
        let start = self.bump().span;
        let name = self.ident("the rule's name");
        let mut target = None;
        if self.eat_word("for") {
            if self.eat_word("type") {
                target = self.name("a device type").map(Target::Type);
            } else if self.eat_word("thing") {
                target = self.name("a thing's name").map(Target::Thing);
            } else {
                self.unexpected("`type` or `thing`");
            }
        } else if name.is_some() {
            self.unexpected("`for type NAME` or `for thing NAME`");
        }
        if !self.at(Tok::LBrace) {
            self.recover(self.open, &["rule", "test"], &[Tok::LBrace]);
        }
        self.expect(Tok::LBrace, "`{`")?;
        let level = self.open;
        let mut rule = Rule {
            name: name.unwrap_or(Ident {
                text: String::new(),
                span: start,
            }),
            target,
            children: None,
            when: None,
            clear: None,
            cooldown: None,
            then: Vec::new(),
            on_clear: Vec::new(),
            broken: false,
            span: start,
        };
        while !self.at(Tok::RBrace) && !self.at(Tok::Eof) {
            let clause_start = self.peek().span;
            if !self.clause(&mut rule, clause_start) {
                rule.broken = true;
                self.recover(level, CLAUSES, &[]);
            }
        }
        let end = self.expect(Tok::RBrace, "`}` to close the rule");
        rule.span = start.join(end.map_or(Span::new(self.prev_end(), self.prev_end()), |t| t.span));
        Some(rule)
    }

    /// One clause; false after an error (the caller recovers).
    fn clause(&mut self, rule: &mut Rule, start: Span) -> bool {
        let duplicate = |diags: &mut Diagnostics<'_>, what: &str| {
            diags
                .error(
                    "E012",
                    start,
                    format!("the rule already has a `{what}` clause"),
                )
                .hint("a rule has at most one of each clause");
        };
        if self.eat_word("when") {
            let Some(cond) = self.cond() else {
                return false;
            };
            if rule.when.is_some() {
                duplicate(self.diags, "when");
            }
            rule.when = Some(cond);
        } else if self.eat_word("clear") {
            if self.expect_word("when").is_none() {
                return false;
            }
            let Some(cond) = self.cond() else {
                return false;
            };
            if rule.clear.is_some() {
                duplicate(self.diags, "clear when");
            }
            rule.clear = Some(cond);
        } else if self.eat_word("cooldown") {
            let Some(d) = self.duration() else {
                return false;
            };
            if rule.cooldown.is_some() {
                duplicate(self.diags, "cooldown");
            }
            rule.cooldown = Some(d);
        } else if self.eat_word("then") {
            let Some(actions) = self.block() else {
                return false;
            };
            if !rule.then.is_empty() {
                duplicate(self.diags, "then");
            }
            rule.then = actions;
        } else if self.eat_word("on") {
            if self.expect_word("clear").is_none() {
                return false;
            }
            let Some(actions) = self.block() else {
                return false;
            };
            if !rule.on_clear.is_empty() {
                duplicate(self.diags, "on clear");
            }
            rule.on_clear = actions;
        } else if self.eat_word("children") {
            if self.expect_word("of").is_none() || self.expect_word("type").is_none() {
                return false;
            }
            let Some(t) = self.name("a device type") else {
                return false;
            };
            if rule.children.is_some() {
                duplicate(self.diags, "children");
            }
            rule.children = Some(t);
        } else {
            self.unexpected(
                "`when`, `clear when`, `cooldown`, `then`, `on clear` or `children of type`",
            );
            self.bump();
            return false;
        }
        true
    }

    fn cond(&mut self) -> Parsed<Cond> {
        let expr = self.expr()?;
        let hold = if self.eat_word("for") {
            Some(self.duration()?)
        } else {
            None
        };
        Some(Cond { expr, hold })
    }

    fn block(&mut self) -> Parsed<Vec<Action>> {
        self.expect(Tok::LBrace, "`{`")?;
        let level = self.open;
        let mut actions = Vec::new();
        while !self.at(Tok::RBrace) && !self.at(Tok::Eof) {
            match self.action() {
                Some(action) => actions.push(action),
                None => self.recover(level, ACTIONS, &[Tok::Semi]),
            }
            while self.eat(Tok::Semi) {}
        }
        self.expect(Tok::RBrace, "`}` to close the block")?;
        Some(actions)
    }

    fn action(&mut self) -> Parsed<Action> {
        let start = self.peek().span;
        if self.eat_word("set") {
            let section = if self.eat_word("desired") {
                Section::Desired
            } else if self.eat_word("reported") {
                Section::Reported
            } else {
                self.unexpected("`desired` or `reported`");
                return None;
            };
            let mut path = Vec::new();
            while self.eat(Tok::Dot) {
                path.push(self.ident("a field name")?);
            }
            if path.is_empty() {
                self.unexpected("`.` and a field name");
                return None;
            }
            self.expect(Tok::Assign, "`=`")?;
            let value = self.expr()?;
            let span = start.join(value.span);
            return Some(Action::Set {
                section,
                path,
                value,
                span,
            });
        }
        if self.eat_word("command") {
            let name = self.ident("the command's name")?;
            let payload = if self.at(Tok::LBrace) {
                self.object_fields()?
            } else {
                Vec::new()
            };
            let timeout = if self.eat_word("timeout") {
                Some(self.duration()?)
            } else {
                None
            };
            let on_timeout = if self.at_word("on") && self.text(self.peek_at(1)) == "timeout" {
                self.bump();
                self.bump();
                self.block()?
            } else {
                Vec::new()
            };
            return Some(Action::Command {
                name,
                payload,
                timeout,
                on_timeout,
                span: start.join(Span::new(self.prev_end(), self.prev_end())),
            });
        }
        if self.eat_word("alert") {
            let name = self.ident("the alert's name")?;
            self.expect_word("severity")?;
            let severity_token = self.peek();
            let severity = match (severity_token.tok, self.text(severity_token)) {
                (Tok::Word, "info") => AlertSeverity::Info,
                (Tok::Word, "minor") => AlertSeverity::Minor,
                (Tok::Word, "major") => AlertSeverity::Major,
                (Tok::Word, "critical") => AlertSeverity::Critical,
                _ => {
                    self.unexpected("`info`, `minor`, `major` or `critical`");
                    return None;
                }
            };
            self.bump();
            let token = self.peek();
            if token.tok != Tok::Str {
                self.unexpected("the alert's message in double quotes");
                return None;
            }
            self.bump();
            let message = self.template(token);
            return Some(Action::Alert {
                name,
                severity,
                span: start.join(message.span),
                message,
            });
        }
        if self.eat_word("emit") {
            self.expect_word("event")?;
            let token = self.expect(Tok::Str, "the event's kind in double quotes")?;
            let kind = unescape(self.text(token));
            let payload = if self.at(Tok::LBrace) {
                self.object_fields()?
            } else {
                Vec::new()
            };
            return Some(Action::Emit {
                kind,
                payload,
                span: start.join(Span::new(self.prev_end(), self.prev_end())),
            });
        }
        self.unexpected("an action: `set`, `command`, `alert` or `emit`");
        self.bump();
        None
    }

    fn object_fields(&mut self) -> Parsed<Vec<(Ident, Expr)>> {
        self.expect(Tok::LBrace, "`{`")?;
        let mut fields: Vec<(Ident, Expr)> = Vec::new();
        while !self.at(Tok::RBrace) {
            let key = self.name("a field name")?;
            self.expect(Tok::Colon, "`:`")?;
            let value = self.expr()?;
            if fields.iter().any(|(k, _)| k.text == key.text) {
                self.diags.error(
                    "E012",
                    key.span,
                    format!("field `{}` appears twice", key.text),
                );
            }
            fields.push((key, value));
            if !self.eat(Tok::Comma) {
                break;
            }
        }
        self.expect(Tok::RBrace, "`,` or `}`")?;
        Some(fields)
    }

    // ---- expressions ---------------------------------------------------------------------

    fn expr(&mut self) -> Parsed<Expr> {
        if self.depth >= MAX_NESTING {
            let span = self.peek().span;
            self.diags
                .error("E031", span, "the expression is nested too deeply")
                .hint(format!("at most {MAX_NESTING} levels"));
            return None;
        }
        self.depth += 1;
        let result = self.or();
        self.depth -= 1;
        result
    }

    fn or(&mut self) -> Parsed<Expr> {
        let mut left = self.and()?;
        while self.eat_word("or") {
            let right = self.and()?;
            left = binary(BinOp::Or, left, right);
        }
        Some(left)
    }

    fn and(&mut self) -> Parsed<Expr> {
        let mut left = self.not()?;
        while self.eat_word("and") {
            let right = self.not()?;
            left = binary(BinOp::And, left, right);
        }
        Some(left)
    }

    fn not(&mut self) -> Parsed<Expr> {
        let start = self.peek().span;
        if self.eat_word("not") {
            self.nested(|p| {
                let inner = p.not()?;
                Some(Expr {
                    span: start.join(inner.span),
                    kind: ExprKind::Unary(UnOp::Not, Box::new(inner)),
                })
            })
        } else {
            self.comparison()
        }
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Parsed<T>) -> Parsed<T> {
        if self.depth >= MAX_NESTING {
            let span = self.peek().span;
            self.diags
                .error("E031", span, "the expression is nested too deeply")
                .hint(format!("at most {MAX_NESTING} levels"));
            return None;
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn comparison(&mut self) -> Parsed<Expr> {
        let left = self.additive()?;
        let op = match self.peek().tok {
            Tok::Eq => BinOp::Eq,
            Tok::Ne => BinOp::Ne,
            Tok::Lt => BinOp::Lt,
            Tok::Le => BinOp::Le,
            Tok::Gt => BinOp::Gt,
            Tok::Ge => BinOp::Ge,
            Tok::Assign => {
                let span = self.peek().span;
                self.diags
                    .error("E001", span, "`=` assigns; comparisons use `==`")
                    .hint("write `==`");
                BinOp::Eq
            }
            _ => return Some(left),
        };
        self.bump();
        let right = self.additive()?;
        if matches!(
            self.peek().tok,
            Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge
        ) {
            let span = self.peek().span;
            self.diags
                .error("E001", span, "comparisons do not chain")
                .hint("write `a < b and b < c`");
        }
        Some(binary(op, left, right))
    }

    fn additive(&mut self) -> Parsed<Expr> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek().tok {
                Tok::Plus => BinOp::Add,
                Tok::Minus => BinOp::Sub,
                _ => return Some(left),
            };
            self.bump();
            let right = self.multiplicative()?;
            left = binary(op, left, right);
        }
    }

    fn multiplicative(&mut self) -> Parsed<Expr> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek().tok {
                Tok::Star => BinOp::Mul,
                Tok::Slash => BinOp::Div,
                Tok::Percent => BinOp::Rem,
                _ => return Some(left),
            };
            self.bump();
            let right = self.unary()?;
            left = binary(op, left, right);
        }
    }

    fn unary(&mut self) -> Parsed<Expr> {
        let start = self.peek().span;
        if self.eat(Tok::Minus) {
            return self.nested(|p| {
                let inner = p.unary()?;
                Some(Expr {
                    span: start.join(inner.span),
                    kind: ExprKind::Unary(UnOp::Neg, Box::new(inner)),
                })
            });
        }
        self.coalesce()
    }

    fn coalesce(&mut self) -> Parsed<Expr> {
        let mut left = self.primary()?;
        while self.eat(Tok::Coalesce) {
            // `x ?? -1`: a default may be negative.
            let right = if self.at(Tok::Minus) {
                self.unary()?
            } else {
                self.primary()?
            };
            left = binary(BinOp::Coalesce, left, right);
        }
        Some(left)
    }

    fn primary(&mut self) -> Parsed<Expr> {
        let token = self.peek();
        match token.tok {
            Tok::Number => {
                self.bump();
                let value: f64 = self.text(token).parse().unwrap_or(f64::NAN);
                if !value.is_finite() {
                    self.diags
                        .error("E003", token.span, "this number is too large");
                }
                Some(Expr {
                    kind: ExprKind::Num(value),
                    span: token.span,
                })
            }
            Tok::Str => {
                self.bump();
                let template = self.template(token);
                Some(Expr {
                    span: token.span,
                    kind: ExprKind::Str(template),
                })
            }
            Tok::LParen => {
                self.bump();
                let inner = self.expr()?;
                let end = self.expect(Tok::RParen, "`)`")?;
                Some(Expr {
                    kind: inner.kind,
                    span: token.span.join(end.span),
                })
            }
            Tok::LBrace => {
                let fields = self.nested(|p| p.object_fields())?;
                Some(Expr {
                    kind: ExprKind::Object(fields),
                    span: token.span.join(Span::new(self.prev_end(), self.prev_end())),
                })
            }
            Tok::Duration => {
                self.bump();
                self.diags
                    .error("E021", token.span, "a duration is not a value")
                    .hint("durations follow `for`, `over`, `cooldown`, `timeout` and `at`");
                Some(Expr {
                    kind: ExprKind::Error,
                    span: token.span,
                })
            }
            Tok::Word => self.word_expr(token),
            _ => {
                self.unexpected(
                    "a value: a number, a string, `true`, `false`, a field or a function call",
                );
                None
            }
        }
    }

    fn word_expr(&mut self, token: Token) -> Parsed<Expr> {
        let text = self.text(token).to_owned();
        let literal = |kind| {
            Some(Expr {
                kind,
                span: token.span,
            })
        };
        match text.as_str() {
            "true" => {
                self.bump();
                return literal(ExprKind::Bool(true));
            }
            "false" => {
                self.bump();
                return literal(ExprKind::Bool(false));
            }
            "null" => {
                self.bump();
                return literal(ExprKind::Null);
            }
            "rule" | "test" | "when" | "clear" | "cooldown" | "then" | "on" | "for" | "set"
            | "command" | "alert" | "emit" | "at" | "expect" | "over" | "and" | "or" | "not" => {
                self.unexpected(
                    "a value: a number, a string, `true`, `false`, a field or a function call",
                );
                return None;
            }
            "telemetry" | "reported" | "desired" | "children" | "device" | "job" => {
                return self.path().map(|path| Expr {
                    span: path.span,
                    kind: ExprKind::Path(path),
                });
            }
            _ => {}
        }
        if self.peek_at(1).tok == Tok::LParen {
            return self.call();
        }
        self.bump();
        self.diags
            .error("E020", token.span, format!("unknown name `{text}`"))
            .hint("fields start with `telemetry.`, `reported.`, `desired.`, `device.` or `job.`; strings need double quotes");
        literal(ExprKind::Error)
    }

    fn path(&mut self) -> Parsed<Path> {
        let root_token = self.bump();
        let root = match self.text(root_token) {
            "telemetry" => Root::Telemetry,
            "reported" => Root::Reported,
            "desired" => Root::Desired,
            "device" => Root::Device,
            "job" => Root::Job,
            _ => {
                // `children.reported.x`
                self.expect(Tok::Dot, "`.reported`")?;
                self.expect_word("reported")?;
                Root::Children
            }
        };
        let mut fields = Vec::new();
        while self.eat(Tok::Dot) {
            fields.push(self.ident("a field name")?);
            if fields.len() > 8 {
                let span = fields.last().map_or(root_token.span, |f| f.span);
                self.diags
                    .error("E031", span, "the path is too deep")
                    .hint("at most 8 fields");
            }
        }
        let end = fields.last().map_or(self.prev_end(), |f| f.span.end);
        let span = Span::new(root_token.span.start, end);
        if fields.is_empty() && root != Root::Children {
            self.diags
                .error("E020", span, format!("`{}` needs a field", root.as_str()))
                .hint(format!("write `{}.NAME`", root.as_str()));
            return None;
        }
        Some(Path { root, fields, span })
    }

    fn call(&mut self) -> Parsed<Expr> {
        let name = self.ident("a function")?;
        self.expect(Tok::LParen, "`(`")?;
        let mut args = Vec::new();
        let mut over = None;
        if !self.at(Tok::RParen) {
            loop {
                // `count(children)`: the children themselves.
                if self.at_word("children") && self.peek_at(1).tok == Tok::RParen {
                    let token = self.bump();
                    args.push(Expr {
                        kind: ExprKind::Path(Path {
                            root: Root::Children,
                            fields: Vec::new(),
                            span: token.span,
                        }),
                        span: token.span,
                    });
                } else {
                    args.push(self.expr()?);
                }
                if self.eat_word("over") {
                    over = Some(self.duration()?);
                }
                if !self.eat(Tok::Comma) {
                    break;
                }
            }
        }
        let end = self.expect(Tok::RParen, "`,` or `)`")?;
        Some(Expr {
            span: name.span.join(end.span),
            kind: ExprKind::Call { name, args, over },
        })
    }

    /// A string literal's parts; `{expr}` parts are parsed from the literal's text, `{{` and
    /// `}}` stand for braces.
    fn template(&mut self, token: Token) -> Template {
        let raw = self.text(token);
        let inner_start = token.span.start + 1;
        let inner = &raw[1..raw.len() - 1];
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = inner.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => text.push('\n'),
                    Some((_, 't')) => text.push('\t'),
                    Some((_, other)) => text.push(other),
                    None => {}
                },
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let Some(close) = inner[i + 1..].find('}') else {
                        let at = inner_start + i;
                        self.diags
                            .error(
                                "E001",
                                Span::new(at, at + 1),
                                "`{` in a string opens an expression that is not closed",
                            )
                            .hint("write `{{` for a brace");
                        break;
                    };
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    let start = inner_start + i + 1;
                    let end = start + close;
                    if let Some(expr) = self.sub_expr(start, end) {
                        parts.push(Part::Expr(expr));
                    }
                    while chars.peek().is_some_and(|(j, _)| *j <= i + 1 + close) {
                        chars.next();
                    }
                }
                '}' => {
                    let at = inner_start + i;
                    self.diags
                        .error("E001", Span::new(at, at + 1), "`}` in a string without `{`")
                        .hint("write `}}` for a brace");
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Template {
            parts,
            span: token.span,
        }
    }

    /// Parses source bytes `start..end` as one expression (an interpolation).
    fn sub_expr(&mut self, start: usize, end: usize) -> Parsed<Expr> {
        let mut tokens: Vec<Token> = lexer::lex(&self.source[start..end])
            .into_iter()
            .map(|t| Token {
                tok: t.tok,
                span: Span::new(t.span.start + start, t.span.end + start),
            })
            .collect();
        if let Some(eof) = tokens.last_mut() {
            eof.span = Span::new(end, end);
        }
        let saved = (
            std::mem::replace(&mut self.tokens, tokens),
            self.pos,
            self.open,
        );
        self.pos = 0;
        let expr = self.expr();
        if expr.is_some() && !self.at(Tok::Eof) {
            self.unexpected("`}` after the expression");
        }
        self.tokens = saved.0;
        self.pos = saved.1;
        self.open = saved.2;
        expr
    }

    // ---- tests ---------------------------------------------------------------------------

    fn test(&mut self) -> Parsed<Test> {
        let start = self.bump().span;
        let name_token = self.expect(Tok::Str, "the test's name in double quotes");
        let name = name_token
            .map(|t| unescape(self.text(t)))
            .unwrap_or_default();
        if !self.at(Tok::LBrace) {
            self.recover(self.open, &["rule", "test"], &[Tok::LBrace]);
        }
        self.expect(Tok::LBrace, "`{`")?;
        let level = self.open;
        let mut steps = Vec::new();
        while !self.at(Tok::RBrace) && !self.at(Tok::Eof) {
            match self.step() {
                Some(step) => steps.push(step),
                None => self.recover(level, &["at"], &[Tok::Semi]),
            }
            while self.eat(Tok::Semi) {}
        }
        let end = self.expect(Tok::RBrace, "`}` to close the test");
        Some(Test {
            name,
            steps,
            span: start.join(end.map_or(start, |t| t.span)),
        })
    }

    fn step(&mut self) -> Parsed<Step> {
        let start = self.peek().span;
        if !self.eat_word("at") {
            self.unexpected("`at` and a time, such as `at 5s`");
            self.bump();
            return None;
        }
        let at = self.duration()?;
        let kind = if self.eat_word("telemetry") {
            StepKind::Telemetry(self.object_expr()?)
        } else if self.eat_word("report") {
            StepKind::Report(self.object_expr()?)
        } else if self.eat_word("desire") {
            StepKind::Desire(self.object_expr()?)
        } else if self.eat_word("child") {
            let child = self.name("the child's name")?;
            self.expect_word("reported")?;
            StepKind::Child(child, self.object_expr()?)
        } else if self.eat_word("reply") {
            let command = self.ident("the command's name")?;
            let payload = if self.at(Tok::LBrace) {
                Some(self.object_expr()?)
            } else {
                None
            };
            StepKind::Reply(command, payload)
        } else if self.eat_word("connected") {
            StepKind::Presence(true)
        } else if self.eat_word("disconnected") {
            StepKind::Presence(false)
        } else if self.at_word("job") && self.peek_at(1).tok == Tok::Str {
            self.bump();
            let token = self.bump();
            let id = unescape(self.text(token));
            let status =
                self.ident("the execution's status (in_progress, succeeded, failed, rejected)")?;
            StepKind::Job(id, status.text.to_ascii_uppercase())
        } else if self.eat_word("expect") {
            let negated = self.eat_word("no");
            let expectation = if self.eat_word("alert") {
                let name = self.ident("the alert's name")?;
                let state = if self.eat_word("firing") {
                    Some(AlertState::Firing)
                } else if self.eat_word("resolved") {
                    Some(AlertState::Resolved)
                } else {
                    None
                };
                Expectation::Alert(name, state)
            } else if self.eat_word("command") {
                Expectation::Command(self.ident("the command's name")?)
            } else if self.at_word("event") && self.peek_at(1).tok == Tok::Str {
                self.bump();
                let token = self.bump();
                Expectation::Event(unescape(self.text(token)), token.span)
            } else {
                if negated {
                    self.unexpected("`alert`, `command` or `event` after `expect no`");
                    return None;
                }
                Expectation::That(self.expr()?)
            };
            StepKind::Expect(negated, expectation)
        } else {
            self.unexpected(
                "`telemetry`, `report`, `desire`, `child`, `reply`, `connected`, `disconnected`, `job` or `expect`",
            );
            return None;
        };
        Some(Step {
            at,
            kind,
            span: start.join(Span::new(self.prev_end(), self.prev_end())),
        })
    }

    fn object_expr(&mut self) -> Parsed<Expr> {
        let start = self.peek().span;
        let fields = self.object_fields()?;
        Some(Expr {
            kind: ExprKind::Object(fields),
            span: start.join(Span::new(self.prev_end(), self.prev_end())),
        })
    }
}

fn binary(op: BinOp, left: Expr, right: Expr) -> Expr {
    Expr {
        span: left.span.join(right.span),
        kind: ExprKind::Binary(op, Box::new(left), Box::new(right)),
    }
}

/// A string literal's text without quotes and escapes (no interpolation).
fn unescape(raw: &str) -> String {
    let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or("");
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(source: &str) -> File {
        let mut diags = Diagnostics::new(source);
        let file = parse(source, &mut diags);
        let items = diags.finish();
        assert!(items.is_empty(), "{items:#?}");
        file
    }

    fn errors(source: &str) -> Vec<String> {
        let mut diags = Diagnostics::new(source);
        parse(source, &mut diags);
        diags.finish().iter().map(|d| d.headline()).collect()
    }

    #[test]
    fn the_design_sketch_parses() {
        let file = parse_ok(
            r#"
            rule high_temp for type Thermostat {
              when telemetry.temp > 30.0 for 5m
              clear when telemetry.temp < 27.0 for 2m
              then { alert HighTemp severity major "temp {telemetry.temp}"; set desired.fan = "on" }
              on clear { set desired.fan = "auto" }
            }
            "#,
        );
        let rule = &file.rules[0];
        assert_eq!(rule.name.text, "high_temp");
        assert_eq!(rule.when.as_ref().unwrap().hold.unwrap().ms, 300_000);
        assert_eq!(rule.clear.as_ref().unwrap().hold.unwrap().ms, 120_000);
        assert_eq!(rule.then.len(), 2);
        assert_eq!(rule.on_clear.len(), 1);
        let Action::Alert { message, .. } = &rule.then[0] else {
            panic!()
        };
        assert_eq!(message.parts.len(), 2);
    }

    #[test]
    fn precedence_binds_coalesce_tightest_and_or_loosest() {
        let file = parse_ok(
            "rule r for type T { when telemetry.a ?? 0 > 1 and not telemetry.b == 2 or true then {} }",
        );
        let ExprKind::Binary(BinOp::Or, left, _) = &file.rules[0].when.as_ref().unwrap().expr.kind
        else {
            panic!("or at the top")
        };
        let ExprKind::Binary(BinOp::And, cmp, _) = &left.kind else {
            panic!("and below")
        };
        let ExprKind::Binary(BinOp::Gt, coalesce, _) = &cmp.kind else {
            panic!("comparison below")
        };
        assert!(matches!(
            coalesce.kind,
            ExprKind::Binary(BinOp::Coalesce, ..)
        ));
    }

    #[test]
    fn errors_are_all_reported_with_positions() {
        let errs = errors(
            "rule r for type T {\n  when telemetry.a > \n  cooldown 5\n  then { set desired = 1 }\n}\n",
        );
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs[0].starts_with("3:3: error: expected a value"),
            "{errs:#?}"
        );
        assert!(
            errs[1].starts_with("3:12: error: a duration needs a unit"),
            "{errs:#?}"
        );
        assert!(
            errs[2].starts_with("4:22: error: expected `.` and a field name"),
            "{errs:#?}"
        );
    }

    #[test]
    fn hostile_nesting_is_refused_not_overflowed() {
        let deep = format!(
            "rule r for type T {{ when {}1{} then {{}} }}",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        let errs = errors(&deep);
        assert!(
            errs.iter().any(|e| e.contains("nested too deeply")),
            "{errs:#?}"
        );
        let negations = format!(
            "rule r for type T {{ when {}true then {{}} }}",
            "not ".repeat(10_000)
        );
        assert!(
            errors(&negations)
                .iter()
                .any(|e| e.contains("nested too deeply"))
        );
    }

    #[test]
    fn tests_parse() {
        let file = parse_ok(
            r#"test "fires" {
                 at 0s telemetry {temp: 35}
                 at 1999ms expect no alert HighTemp
                 at 2s expect alert HighTemp firing
                 at 2s expect desired.fan == "on"
                 at 3s reply reboot {status: "ok"}
                 at 4s expect event "overheat"
                 at 5s child "sensor-1" reported {temp: 20}
               }"#,
        );
        assert_eq!(file.tests[0].steps.len(), 7);
    }
}
