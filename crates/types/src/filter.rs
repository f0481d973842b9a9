//! Consul's `?filter=` expression language (the go-bexpr grammar), evaluated
//! over `serde_json::Value` rows.
//!
//! This module owns three things:
//!
//! * **Parsing** a filter string into an AST with a hand-written recursive
//!   descent parser. Errors carry a `line:column (byte offset)` prefix and say
//!   what was expected and what was found, because Consul echoes the parser
//!   error in its 400 response body and clients rely on it to locate typos.
//! * **Selector validation** against the top-level fields an endpoint exposes
//!   (Consul rejects unknown selectors with a 400 rather than silently
//!   matching nothing).
//! * **Evaluation** against a JSON row shaped exactly as Consul serialises the
//!   result item (PascalCase keys).
//!
//! Grammar (precedence `not` > `and` > `or`; whitespace is insignificant
//! outside string literals; keywords are lower case):
//!
//! ```text
//! expr     := or
//! or       := and ( "or" and )*
//! and      := unary ( "and" unary )*
//! unary    := "not" unary | "(" or ")" | match
//! match    := selector ( "==" | "!=" ) value
//!           | selector "is" [ "not" ] "empty"
//!           | value [ "not" ] "in" selector
//!           | selector [ "not" ] "contains" value
//!           | selector [ "not" ] "matches" value
//! selector := name ( "." name | "[" string "]" )*      name := [A-Za-z_][A-Za-z0-9_]*
//! value    := "double quoted" | `raw backtick` | bare   bare := [A-Za-z0-9_.:/-]+
//! ```
//!
//! Evaluation semantics (we have no Go struct types to coerce against, so the
//! JSON type of the selected field stands in for the Go field type):
//!
//! * `==` / `!=` coerce the value to the field's JSON type: numbers compare
//!   numerically (exactly for integers, so large `u64` indexes are safe),
//!   booleans use Go `strconv.ParseBool` spellings (`true`, `T`, `1`, ...),
//!   strings compare verbatim. Arrays/objects never equal a value.
//! * `in` / `contains` test element membership on arrays (each element
//!   coerced as above), key presence on objects, and substring on strings.
//! * `matches` runs an unanchored regex against a string (or any string
//!   element of an array). Regexes are compiled at parse time so a bad regex
//!   is a parse error, as in Consul.
//! * `is empty` is true for a missing field, `null`, `""`, `[]` and `{}`.
//! * A missing (or `null`) field makes the positive operators false and the
//!   negated ones (`!=`, `not in`, `not contains`, `not matches`) true.
//! * When a selector walks *through* an array (e.g. `Checks.Status` on a
//!   `/health/service` entry), the whole match expression is evaluated per
//!   element and is true if it holds for **any** element. This mirrors
//!   bexpr's behaviour for slices of structs, including the consequence that
//!   an empty array makes every such match false (even the negated forms).
//!
//! Resource limits: expressions longer than 4096 bytes and nesting (of
//! parentheses and `not`) deeper than 64 are rejected at parse time, so a
//! hostile query string cannot blow the stack or burn CPU.

use regex::{Regex, RegexBuilder};
use serde_json::Value;

/// Longest accepted expression, in bytes.
const MAX_EXPRESSION_LEN: usize = 4096;
/// Deepest accepted nesting of parentheses / `not`.
const MAX_DEPTH: usize = 64;
/// Compiled-regex budget; keeps a pathological pattern from costing much memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A parse or validation failure. `message` is ready to hand back to the
/// client; `offset` is the byte offset in the expression it refers to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FilterError {
    pub message: String,
    pub offset: usize,
}

/// A parsed filter expression, ready to be evaluated against many rows.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Node,
}

#[derive(Debug, Clone)]
enum Node {
    // And/Or are kept flat (not binary trees) so long chains of `and`/`or`
    // cost no recursion depth while evaluating.
    Or(Vec<Node>),
    And(Vec<Node>),
    Not(Box<Node>),
    Match(Box<MatchExpr>),
}

#[derive(Debug, Clone)]
struct MatchExpr {
    selector: Selector,
    op: Op,
}

#[derive(Debug, Clone)]
struct Selector {
    /// Path segments; never empty.
    segments: Vec<String>,
    /// The selector as written, for error messages.
    text: String,
    /// Byte offset of the selector in the expression.
    offset: usize,
}

#[derive(Debug, Clone)]
enum Op {
    Equal { negate: bool, value: String },
    Empty { negate: bool },
    // `"v" in S` and `S contains "v"` are the same test written two ways.
    Contains { negate: bool, value: String },
    Matches { negate: bool, re: Regex },
}

impl Filter {
    /// Parse a filter expression.
    pub fn parse(expr: &str) -> Result<Filter, FilterError> {
        if expr.len() > MAX_EXPRESSION_LEN {
            return Err(FilterError {
                message: format!(
                    "filter: expression is {} bytes long, the maximum is {} bytes",
                    expr.len(),
                    MAX_EXPRESSION_LEN
                ),
                offset: MAX_EXPRESSION_LEN,
            });
        }
        let mut p = Parser::new(expr);
        let root = p.parse_or()?;
        p.skip_ws();
        if p.peek().is_some() {
            return Err(p.expected(r#""and", "or" or end of input"#));
        }
        Ok(Filter { root })
    }

    /// Evaluate against a JSON object (an API result row as Consul would
    /// serialise it, PascalCase keys).
    pub fn matches(&self, v: &Value) -> bool {
        eval_node(&self.root, v)
    }

    /// Check that every selector's first path segment names a field that
    /// exists for the endpoint; Consul returns 400 for unknown selectors.
    /// `fields` is the list of allowed top-level field names (case-sensitive,
    /// as in Consul). Reports the first offending selector in source order.
    pub fn validate_selectors(&self, fields: &[&str]) -> Result<(), FilterError> {
        let mut selectors = Vec::new();
        collect_selectors(&self.root, &mut selectors);
        for sel in selectors {
            let head = sel.segments.first().map(String::as_str).unwrap_or("");
            if !fields.contains(&head) {
                return Err(FilterError {
                    message: format!("Selector {:?} is not valid", sel.text),
                    offset: sel.offset,
                });
            }
        }
        Ok(())
    }
}

impl Filter {
    /// Checks every selector against the shape of the rows it will filter (a row of the endpoint's
    /// type serialised with default values), as go-bexpr checks selectors against the Go type:
    /// Consul answers 400 for a selector naming no field. Below a map (an empty object in the
    /// shape), an array or an optional field (`null`), any path is accepted.
    pub fn validate_shape(&self, shape: &Value) -> Result<(), FilterError> {
        let mut selectors = Vec::new();
        collect_selectors(&self.root, &mut selectors);
        for sel in selectors {
            let mut at = shape;
            for seg in &sel.segments {
                match at {
                    Value::Object(m) if m.is_empty() => break,
                    Value::Object(m) => match m.get(seg) {
                        Some(v) => at = v,
                        None => {
                            return Err(FilterError {
                                message: format!("Selector {:?} is not valid", sel.text),
                                offset: sel.offset,
                            })
                        }
                    },
                    Value::Array(_) | Value::Null => break,
                    _ => {
                        return Err(FilterError {
                            message: format!("Selector {:?} is not valid", sel.text),
                            offset: sel.offset,
                        })
                    }
                }
            }
        }
        Ok(())
    }
}

/// Convenience: parse then filter a Vec in place. `None` or an empty string
/// means "no filter", matching Consul, which only builds a filter when the
/// query parameter is non-empty.
pub fn apply(expr: Option<&str>, rows: Vec<Value>) -> Result<Vec<Value>, FilterError> {
    let Some(expr) = expr.filter(|e| !e.is_empty()) else {
        return Ok(rows);
    };
    let filter = Filter::parse(expr)?;
    let mut rows = rows;
    rows.retain(|row| filter.matches(row));
    Ok(rows)
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Eq,
    Ne,
    IsEmpty,
    IsNotEmpty,
    In,
    NotIn,
    Contains,
    NotContains,
    Matches,
    NotMatches,
}

/// The left operand of a match expression. Until we see the operator we do
/// not know whether it is a selector (`S == v`) or a value (`v in S`), and a
/// bare word like `primary` can be either.
enum Operand {
    Str {
        value: String,
        offset: usize,
    },
    Bare {
        raw: String,
        offset: usize,
        selector: Option<Selector>,
    },
    /// A selector using the `["key"]` form, which can only be a selector.
    Indexed(Selector),
}

const EXPECT_OPERAND: &str = r#""(", "not", a selector or a value"#;
const EXPECT_OPERATOR: &str = r#""==", "!=", "contains", "in", "is", "matches" or "not""#;
const EXPECT_VALUE: &str = "a quoted string, a number or a bare value";

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Characters allowed in an unquoted value. Broader than a selector name so
/// that common unquoted values (`web-1`, `t2.medium`, `-5`, `1.5`) work.
fn is_bare_byte(b: u8) -> bool {
    is_ident_byte(b) || matches!(b, b'.' | b'-' | b':' | b'/')
}

/// Split a bare token into selector segments if it is a valid dotted
/// selector (`Service.Meta.env`), otherwise `None`.
fn dotted_segments(raw: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for seg in raw.split('.') {
        let bytes = seg.as_bytes();
        let ok = !bytes.is_empty() && is_ident_start(bytes[0]) && bytes.iter().all(|b| is_ident_byte(*b));
        if !ok {
            return None;
        }
        out.push(seg.to_string());
    }
    Some(out)
}

fn line_col(src: &str, pos: usize) -> (usize, usize) {
    let before = src.get(..pos).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser { src, bytes: src.as_bytes(), pos: 0, depth: 0 }
    }

    // ----- errors ---------------------------------------------------------

    fn error_at(&self, pos: usize, msg: impl AsRef<str>) -> FilterError {
        let (line, col) = line_col(self.src, pos);
        FilterError { message: format!("filter: {line}:{col} ({pos}): {}", msg.as_ref()), offset: pos }
    }

    /// Describe the input at `pos` for "found ..." in error messages.
    fn found_at(&self, pos: usize) -> String {
        match self.src.get(pos..) {
            None | Some("") => "end of input".to_string(),
            Some(rest) => {
                let tok: String = rest.chars().take_while(|c| !c.is_whitespace()).take(16).collect();
                format!("{tok:?}")
            }
        }
    }

    fn expected(&self, what: &str) -> FilterError {
        self.error_at(self.pos, format!("no match found, expected: {what}, found: {}", self.found_at(self.pos)))
    }

    fn invalid_selector(&self, start: usize) -> FilterError {
        // Show the whole malformed token, not just the part we accepted.
        let mut end = start;
        while self.bytes.get(end).is_some_and(|b| is_bare_byte(*b)) {
            end += 1;
        }
        let text = &self.src[start..end];
        self.error_at(
            start,
            format!(
                "invalid selector {text:?}: selectors are \".\"-separated names of ASCII letters, \
                 digits and underscores; use the [\"key\"] form for other map keys"
            ),
        )
    }

    // ----- lexical helpers -------------------------------------------------

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    /// A keyword only matches as a whole word, so `Notes`, `nothing` or
    /// `index` are read as selectors rather than `not`/`in` + garbage.
    fn at_keyword(&self, kw: &str) -> bool {
        let end = self.pos + kw.len();
        self.bytes.get(self.pos..end) == Some(kw.as_bytes()) && !self.bytes.get(end).is_some_and(|b| is_ident_byte(*b))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        if self.at_keyword(kw) {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }

    fn eat_symbol(&mut self, sym: &str) -> bool {
        if self.bytes[self.pos..].starts_with(sym.as_bytes()) {
            self.pos += sym.len();
            true
        } else {
            false
        }
    }

    fn scan_while(&mut self, pred: fn(u8) -> bool) -> &'a str {
        let src = self.src;
        let start = self.pos;
        while self.peek().is_some_and(pred) {
            self.pos += 1;
        }
        &src[start..self.pos]
    }

    fn enter(&mut self, at: usize) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(at, format!("expression nesting exceeds the maximum depth of {MAX_DEPTH}")));
        }
        Ok(())
    }

    // ----- boolean structure ----------------------------------------------

    fn parse_or(&mut self) -> Result<Node, FilterError> {
        let mut items = vec![self.parse_and()?];
        loop {
            self.skip_ws();
            if !self.eat_keyword("or") {
                break;
            }
            items.push(self.parse_and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Node::Or(items) })
    }

    fn parse_and(&mut self) -> Result<Node, FilterError> {
        let mut items = vec![self.parse_unary()?];
        loop {
            self.skip_ws();
            if !self.eat_keyword("and") {
                break;
            }
            items.push(self.parse_unary()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Node::And(items) })
    }

    fn parse_unary(&mut self) -> Result<Node, FilterError> {
        self.skip_ws();
        let start = self.pos;
        if self.at_keyword("not") {
            self.enter(start)?;
            self.pos += 3;
            let inner = self.parse_unary()?;
            self.depth -= 1;
            return Ok(Node::Not(Box::new(inner)));
        }
        if self.peek() == Some(b'(') {
            self.enter(start)?;
            self.pos += 1;
            let inner = self.parse_or()?;
            self.skip_ws();
            if self.peek() != Some(b')') {
                return Err(self.expected(r#""and", "or" or ")""#));
            }
            self.pos += 1;
            self.depth -= 1;
            return Ok(inner);
        }
        self.parse_match()
    }

    // ----- match expressions ----------------------------------------------

    fn parse_match(&mut self) -> Result<Node, FilterError> {
        self.skip_ws();
        let operand = self.parse_operand()?;
        self.skip_ws();
        let kind = self.parse_operator()?;

        let (selector, op) = match kind {
            OpKind::In | OpKind::NotIn => {
                let value = match operand {
                    Operand::Str { value, .. } => value,
                    Operand::Bare { raw, .. } => raw,
                    Operand::Indexed(sel) => {
                        return Err(self.error_at(
                            sel.offset,
                            format!("expected a value before \"in\", found the selector {:?}", sel.text),
                        ))
                    }
                };
                let selector = self.parse_selector()?;
                (selector, Op::Contains { negate: kind == OpKind::NotIn, value })
            }
            _ => {
                let selector = self.operand_into_selector(operand)?;
                let op = match kind {
                    OpKind::Eq | OpKind::Ne => {
                        let (value, _) = self.parse_value()?;
                        Op::Equal { negate: kind == OpKind::Ne, value }
                    }
                    OpKind::IsEmpty | OpKind::IsNotEmpty => Op::Empty { negate: kind == OpKind::IsNotEmpty },
                    OpKind::Contains | OpKind::NotContains => {
                        let (value, _) = self.parse_value()?;
                        Op::Contains { negate: kind == OpKind::NotContains, value }
                    }
                    OpKind::Matches | OpKind::NotMatches => {
                        let (pattern, at) = self.parse_value()?;
                        let re = RegexBuilder::new(&pattern)
                            .size_limit(REGEX_SIZE_LIMIT)
                            .dfa_size_limit(REGEX_SIZE_LIMIT)
                            .build()
                            .map_err(|e| {
                                // The regex crate's message spans several
                                // lines; flatten it for an HTTP error body.
                                let detail = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
                                self.error_at(at, format!("invalid regular expression {pattern:?}: {detail}"))
                            })?;
                        Op::Matches { negate: kind == OpKind::NotMatches, re }
                    }
                    OpKind::In | OpKind::NotIn => unreachable!("handled above"),
                };
                (selector, op)
            }
        };
        Ok(Node::Match(Box::new(MatchExpr { selector, op })))
    }

    fn operand_into_selector(&self, operand: Operand) -> Result<Selector, FilterError> {
        match operand {
            Operand::Indexed(sel) => Ok(sel),
            Operand::Bare { selector: Some(sel), .. } => Ok(sel),
            Operand::Bare { selector: None, offset, .. } => Err(self.invalid_selector(offset)),
            Operand::Str { offset, .. } => Err(self.error_at(
                offset,
                "expected a selector, found a quoted string (a quoted value may only appear \
                 on the left of \"in\" or \"not in\")",
            )),
        }
    }

    fn parse_operand(&mut self) -> Result<Operand, FilterError> {
        let start = self.pos;
        match self.peek() {
            Some(b'"' | b'`') => {
                let value = self.parse_string()?;
                Ok(Operand::Str { value, offset: start })
            }
            Some(b) if is_bare_byte(b) => {
                let raw = self.scan_while(is_bare_byte);
                let segments = dotted_segments(raw);
                if self.peek() == Some(b'[') {
                    // The index form only continues a selector.
                    let Some(segments) = segments else {
                        return Err(self.invalid_selector(start));
                    };
                    let mut sel = Selector { segments, text: String::new(), offset: start };
                    self.parse_selector_tail(&mut sel)?;
                    return Ok(Operand::Indexed(sel));
                }
                let selector = segments.map(|segments| Selector { segments, text: raw.to_string(), offset: start });
                Ok(Operand::Bare { raw: raw.to_string(), offset: start, selector })
            }
            _ => Err(self.expected(EXPECT_OPERAND)),
        }
    }

    fn parse_operator(&mut self) -> Result<OpKind, FilterError> {
        if self.eat_symbol("==") {
            return Ok(OpKind::Eq);
        }
        if self.eat_symbol("!=") {
            return Ok(OpKind::Ne);
        }
        if self.eat_keyword("is") {
            self.skip_ws();
            let negate = self.eat_keyword("not");
            if negate {
                self.skip_ws();
            }
            if !self.eat_keyword("empty") {
                return Err(self.expected(if negate { r#""empty""# } else { r#""empty" or "not""# }));
            }
            return Ok(if negate { OpKind::IsNotEmpty } else { OpKind::IsEmpty });
        }
        if self.eat_keyword("in") {
            return Ok(OpKind::In);
        }
        if self.eat_keyword("contains") {
            return Ok(OpKind::Contains);
        }
        if self.eat_keyword("matches") {
            return Ok(OpKind::Matches);
        }
        if self.eat_keyword("not") {
            self.skip_ws();
            if self.eat_keyword("in") {
                return Ok(OpKind::NotIn);
            }
            if self.eat_keyword("contains") {
                return Ok(OpKind::NotContains);
            }
            if self.eat_keyword("matches") {
                return Ok(OpKind::NotMatches);
            }
            return Err(self.expected(r#""contains", "in" or "matches""#));
        }
        Err(self.expected(EXPECT_OPERATOR))
    }

    /// A selector in a position where only a selector is allowed (after `in`).
    fn parse_selector(&mut self) -> Result<Selector, FilterError> {
        self.skip_ws();
        let start = self.pos;
        if !self.peek().is_some_and(is_ident_start) {
            return Err(self.expected("a selector"));
        }
        let first = self.scan_while(is_ident_byte).to_string();
        let mut sel = Selector { segments: vec![first], text: String::new(), offset: start };
        self.parse_selector_tail(&mut sel)?;
        // Catch `Node.Meta.my-key` here: otherwise the error would surface
        // later as confusing trailing garbage.
        if self.peek().is_some_and(is_bare_byte) {
            return Err(self.invalid_selector(start));
        }
        Ok(sel)
    }

    /// Parse any `.name` / `["key"]` continuations and fix up `sel.text`.
    fn parse_selector_tail(&mut self, sel: &mut Selector) -> Result<(), FilterError> {
        loop {
            match self.peek() {
                Some(b'[') => {
                    self.pos += 1;
                    self.skip_ws();
                    if !matches!(self.peek(), Some(b'"' | b'`')) {
                        return Err(self.expected("a quoted map key"));
                    }
                    let key = self.parse_string()?;
                    sel.segments.push(key);
                    self.skip_ws();
                    if self.peek() != Some(b']') {
                        return Err(self.expected(r#""]""#));
                    }
                    self.pos += 1;
                }
                Some(b'.') => {
                    self.pos += 1;
                    if !self.peek().is_some_and(is_ident_start) {
                        return Err(self.expected("a field name"));
                    }
                    let name = self.scan_while(is_ident_byte).to_string();
                    sel.segments.push(name);
                }
                _ => break,
            }
        }
        sel.text = self.src[sel.offset..self.pos].to_string();
        Ok(())
    }

    /// A right-hand value; returns the raw text and its offset.
    fn parse_value(&mut self) -> Result<(String, usize), FilterError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some(b'"' | b'`') => Ok((self.parse_string()?, start)),
            Some(b) if is_bare_byte(b) => Ok((self.scan_while(is_bare_byte).to_string(), start)),
            _ => Err(self.expected(EXPECT_VALUE)),
        }
    }

    /// Parse a double-quoted (Go escapes) or backtick (raw) string literal;
    /// `self.pos` must be on the opening quote.
    fn parse_string(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        let quote = self.bytes[self.pos];
        self.pos += 1;
        if quote == b'`' {
            // Raw strings: no escapes at all, which is why they are the
            // recommended way to write regexes.
            return match self.src[self.pos..].find('`') {
                Some(rel) => {
                    let s = self.src[self.pos..self.pos + rel].to_string();
                    self.pos += rel + 1;
                    Ok(s)
                }
                None => Err(self.error_at(start, "unterminated raw string literal")),
            };
        }
        let mut out = String::new();
        loop {
            let Some(c) = self.src[self.pos..].chars().next() else {
                return Err(self.error_at(start, "unterminated string literal"));
            };
            match c {
                '"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                '\\' => {
                    let esc_start = self.pos;
                    self.pos += 1;
                    self.parse_escape(&mut out, start, esc_start)?;
                }
                c => {
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    /// Go-style escapes, since bexpr unquotes double-quoted strings the way
    /// Go's `strconv.Unquote` does.
    fn parse_escape(&mut self, out: &mut String, str_start: usize, esc_start: usize) -> Result<(), FilterError> {
        let Some(c) = self.src[self.pos..].chars().next() else {
            return Err(self.error_at(str_start, "unterminated string literal"));
        };
        self.pos += c.len_utf8();
        let simple = match c {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '\\' => Some('\\'),
            '"' => Some('"'),
            _ => None,
        };
        if let Some(ch) = simple {
            out.push(ch);
            return Ok(());
        }
        let code = match c {
            'x' => self.read_radix(2, 16, esc_start)?,
            'u' => self.read_radix(4, 16, esc_start)?,
            'U' => self.read_radix(8, 16, esc_start)?,
            '0'..='7' => {
                // Three octal digits in total; `c` was the first.
                self.pos -= 1;
                let v = self.read_radix(3, 8, esc_start)?;
                if v > 0xff {
                    return Err(self.error_at(esc_start, "octal escape value out of range"));
                }
                v
            }
            other => {
                return Err(self.error_at(esc_start, format!("invalid escape sequence \"\\{other}\"")));
            }
        };
        match char::from_u32(code) {
            Some(ch) => {
                out.push(ch);
                Ok(())
            }
            None => Err(self.error_at(esc_start, "escape sequence is not a valid Unicode code point")),
        }
    }

    fn read_radix(&mut self, n: usize, radix: u32, esc_start: usize) -> Result<u32, FilterError> {
        let digits = self.src.get(self.pos..self.pos + n).filter(|d| d.chars().all(|c| c.is_digit(radix)));
        let Some(digits) = digits else {
            return Err(self.error_at(esc_start, "malformed escape sequence"));
        };
        let v =
            u32::from_str_radix(digits, radix).map_err(|_| self.error_at(esc_start, "malformed escape sequence"))?;
        self.pos += n;
        Ok(v)
    }
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

fn eval_node(node: &Node, row: &Value) -> bool {
    match node {
        Node::Or(items) => items.iter().any(|n| eval_node(n, row)),
        Node::And(items) => items.iter().all(|n| eval_node(n, row)),
        Node::Not(inner) => !eval_node(inner, row),
        Node::Match(m) => eval_path(Some(row), &m.selector.segments, &|target: Option<&Value>| m.op.test(target)),
    }
}

/// Walk `path` from `cur` and apply `test` to what it selects. Arrays met
/// with path left to walk fan out: true if the test holds for any element
/// (see the module docs). Anything else that cannot be descended into
/// selects "missing".
fn eval_path(cur: Option<&Value>, path: &[String], test: &dyn Fn(Option<&Value>) -> bool) -> bool {
    let Some((head, rest)) = path.split_first() else {
        return test(cur);
    };
    match cur {
        Some(Value::Object(map)) => eval_path(map.get(head.as_str()), rest, test),
        Some(Value::Array(items)) => items.iter().any(|item| eval_path(Some(item), path, test)),
        _ => test(None),
    }
}

impl Op {
    fn test(&self, target: Option<&Value>) -> bool {
        // JSON null is how an unset Go pointer/map/slice serialises; treat
        // it like an absent key.
        let target = target.filter(|v| !v.is_null());
        match self {
            Op::Equal { negate, value } => target.is_some_and(|t| scalar_eq(t, value)) != *negate,
            Op::Empty { negate } => is_empty(target) != *negate,
            Op::Contains { negate, value } => target.is_some_and(|t| contains(t, value)) != *negate,
            Op::Matches { negate, re } => target.is_some_and(|t| regex_match(re, t)) != *negate,
        }
    }
}

/// Compare a field against a raw filter value, coercing the value to the
/// field's JSON type the way bexpr coerces to the Go field type.
fn scalar_eq(field: &Value, raw: &str) -> bool {
    match field {
        Value::String(s) => s == raw,
        Value::Bool(b) => parse_go_bool(raw) == Some(*b),
        Value::Number(n) => number_eq(n, raw),
        _ => false,
    }
}

fn number_eq(n: &serde_json::Number, raw: &str) -> bool {
    // Integers first and exactly: Raft indexes are u64 and lose precision
    // as f64.
    if let (Some(a), Ok(b)) = (n.as_i64(), raw.parse::<i64>()) {
        return a == b;
    }
    if let (Some(a), Ok(b)) = (n.as_u64(), raw.parse::<u64>()) {
        return a == b;
    }
    match (n.as_f64(), raw.parse::<f64>()) {
        (Some(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The spellings Go's `strconv.ParseBool` accepts.
fn parse_go_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn is_empty(target: Option<&Value>) -> bool {
    match target {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Bool(_) | Value::Number(_)) => false,
    }
}

fn contains(target: &Value, raw: &str) -> bool {
    match target {
        Value::Array(items) => items.iter().any(|item| scalar_eq(item, raw)),
        Value::Object(map) => map.contains_key(raw),
        Value::String(s) => s.contains(raw),
        _ => false,
    }
}

fn regex_match(re: &Regex, target: &Value) -> bool {
    match target {
        Value::String(s) => re.is_match(s),
        Value::Array(items) => items.iter().any(|item| item.as_str().is_some_and(|s| re.is_match(s))),
        _ => false,
    }
}

fn collect_selectors<'n>(node: &'n Node, out: &mut Vec<&'n Selector>) {
    match node {
        Node::Or(items) | Node::And(items) => items.iter().for_each(|n| collect_selectors(n, out)),
        Node::Not(inner) => collect_selectors(inner, out),
        Node::Match(m) => out.push(&m.selector),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A `/v1/health/service/:service` entry as Consul serialises it.
    fn entry() -> Value {
        json!({
            "Node": {
                "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
                "Node": "foobar",
                "Address": "10.1.10.12",
                "Datacenter": "dc1",
                "TaggedAddresses": {"lan": "10.1.10.12", "wan": "10.1.10.12"},
                "Meta": {"instance_type": "t2.medium", "my-key": "dashed"}
            },
            "Service": {
                "ID": "redis-1",
                "Service": "redis",
                "Tags": ["primary", "v1"],
                "Address": "",
                "Meta": {"redis_version": "4.0", "env": "prod"},
                "Port": 8000,
                "Weights": {"Passing": 10, "Warning": 1},
                "EnableTagOverride": false,
                "Proxy": null,
                "Connect": {}
            },
            "Checks": [
                {"CheckID": "service:redis", "Status": "passing", "ServiceTags": ["primary"], "Output": ""},
                {"CheckID": "serfHealth", "Status": "critical", "ServiceTags": [], "Output": "timeout"}
            ]
        })
    }

    fn parse(expr: &str) -> Filter {
        Filter::parse(expr).unwrap_or_else(|e| panic!("parse {expr:?}: {e}"))
    }

    fn m(expr: &str) -> bool {
        parse(expr).matches(&entry())
    }

    fn m_on(expr: &str, row: Value) -> bool {
        parse(expr).matches(&row)
    }

    fn perr(expr: &str) -> FilterError {
        match Filter::parse(expr) {
            Ok(f) => panic!("expected a parse error for {expr:?}, got {f:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn equality_on_strings() {
        assert!(m(r#"Service.Service == "redis""#));
        assert!(!m(r#"Service.Service == "web""#));
        assert!(m(r#"Service.Service != "web""#));
        assert!(!m(r#"Service.Service != "redis""#));
        assert!(m(r#"Node.Datacenter == "dc1""#));
    }

    #[test]
    fn missing_field_equality() {
        assert!(!m(r#"Service.Nope == "x""#));
        assert!(m(r#"Service.Nope != "x""#));
        // Walking through a missing intermediate behaves the same.
        assert!(!m(r#"Nope.Deeper.Still == "x""#));
        assert!(m(r#"Nope.Deeper.Still != "x""#));
        // null is treated as missing.
        assert!(!m(r#"Service.Proxy.DestinationServiceName == "x""#));
        assert!(m(r#"Service.Proxy.DestinationServiceName != "x""#));
    }

    #[test]
    fn numbers_coerce_to_field_type() {
        assert!(m("Service.Port == 8000"));
        assert!(m(r#"Service.Port == "8000""#));
        assert!(m("Service.Port != 8001"));
        assert!(m("Service.Port == 8000.0"));
        assert!(m("Service.Weights.Passing == 10"));
        assert!(!m("Service.Port == abc"));
        assert!(m("Service.Port != abc"));
        assert!(m_on("N == -5", json!({"N": -5})));
        assert!(m_on("F == 1.5", json!({"F": 1.5})));
        assert!(m_on("F == 1.50", json!({"F": 1.5})));
        // A string field compares textually even if the value looks numeric.
        assert!(m_on("V == 1", json!({"V": "1"})));
        assert!(!m_on("V == 1.0", json!({"V": "1"})));
    }

    #[test]
    fn large_integers_compare_exactly() {
        let row = json!({"ModifyIndex": u64::MAX});
        assert!(m_on("ModifyIndex == 18446744073709551615", row.clone()));
        assert!(!m_on("ModifyIndex == 18446744073709551614", row.clone()));
        assert!(m_on("ModifyIndex != 18446744073709551614", row));
    }

    #[test]
    fn booleans_coerce_like_go_parsebool() {
        assert!(m("Service.EnableTagOverride == false"));
        assert!(!m("Service.EnableTagOverride == true"));
        assert!(m("Service.EnableTagOverride != true"));
        assert!(m(r#"Service.EnableTagOverride == "false""#));
        assert!(m("Service.EnableTagOverride == F"));
        assert!(m("Service.EnableTagOverride == 0"));
        assert!(!m("Service.EnableTagOverride == nah"));
        assert!(m_on("Native == True", json!({"Native": true})));
    }

    #[test]
    fn in_and_not_in_on_arrays() {
        assert!(m(r#""primary" in Service.Tags"#));
        assert!(!m(r#""v2" in Service.Tags"#));
        assert!(m(r#""v2" not in Service.Tags"#));
        assert!(!m(r#""v1" not in Service.Tags"#));
        // Bare value on the left.
        assert!(m("primary in Service.Tags"));
        // Elements coerce individually.
        assert!(m_on("443 in Ports", json!({"Ports": [80, 443]})));
        assert!(m_on(r#""80" in Ports"#, json!({"Ports": [80, 443]})));
    }

    #[test]
    fn contains_and_not_contains_on_arrays() {
        assert!(m(r#"Service.Tags contains "v1""#));
        assert!(m("Service.Tags contains primary"));
        assert!(!m(r#"Service.Tags contains "v9""#));
        assert!(m(r#"Service.Tags not contains "v9""#));
        assert!(!m(r#"Service.Tags not contains "v1""#));
    }

    #[test]
    fn in_on_maps_tests_keys() {
        assert!(m(r#""env" in Service.Meta"#));
        assert!(!m(r#""prod" in Service.Meta"#));
        assert!(m(r#"Service.Meta contains "redis_version""#));
        assert!(m(r#""nope" not in Service.Meta"#));
        assert!(m(r#""lan" in Node.TaggedAddresses"#));
    }

    #[test]
    fn in_on_strings_is_substring() {
        assert!(m(r#""edi" in Service.Service"#));
        assert!(m(r#"Service.Service contains "dis""#));
        assert!(!m(r#"Service.Service contains "xyz""#));
        assert!(m(r#"Service.Service not contains "xyz""#));
    }

    #[test]
    fn in_on_missing_field() {
        assert!(!m(r#""x" in Service.Missing"#));
        assert!(m(r#""x" not in Service.Missing"#));
        assert!(!m(r#"Service.Missing contains "x""#));
        assert!(m(r#"Service.Missing not contains "x""#));
    }

    #[test]
    fn is_empty_and_is_not_empty() {
        assert!(m("Service.Address is empty")); // ""
        assert!(m("Service.Proxy is empty")); // null
        assert!(m("Service.Connect is empty")); // {}
        assert!(m("Service.Missing is empty")); // absent
        assert!(m_on("Tags is empty", json!({"Tags": []})));
        assert!(!m("Service.Tags is empty"));
        assert!(m("Service.Tags is not empty"));
        assert!(m("Checks is not empty"));
        assert!(m("Service.Meta is not empty"));
        assert!(!m("Service.Port is empty"));
        assert!(m("Service.Tags   is\tnot\n empty"));
    }

    #[test]
    fn regex_matching() {
        assert!(m(r#"Service.Service matches "^re""#));
        assert!(!m(r#"Service.Service matches "^x""#));
        assert!(m(r#"Service.Service not matches "^x""#));
        assert!(!m(r#"Service.Service not matches "dis$""#));
        assert!(!m(r#"Service.Missing matches ".*""#));
        assert!(m(r#"Service.Missing not matches ".""#));
        // Any string element of an array.
        assert!(m(r#"Service.Tags matches "^pri""#));
        // Unanchored, like Go's MatchString.
        assert!(m(r#"Node.Address matches "1\\.10""#));
    }

    #[test]
    fn regex_errors_are_parse_errors() {
        let e = perr(r#"Service.ID matches "(""#);
        assert_eq!(e.offset, 19);
        assert!(e.message.starts_with("filter: 1:20 (19): invalid regular expression"), "{}", e.message);
        assert!(!e.message.contains('\n'));
        let e = perr(r#"Service.ID not matches `[a-`"#);
        assert_eq!(e.offset, 23);
    }

    #[test]
    fn precedence_and_binds_tighter_than_or() {
        let t = "Service.Service == redis";
        let f = "Service.Service == nope";
        // T or (F and F) == true; a left-to-right reading would give false.
        assert!(m(&format!("{t} or {f} and {f}")));
        assert!(m(&format!("{f} and {f} or {t}")));
        assert!(!m(&format!("{f} and {t} or {f}")));
    }

    #[test]
    fn precedence_not_binds_tightest() {
        let t = "Service.Service == redis";
        let f = "Service.Service == nope";
        // (not F) and F == false; not (F and F) would be true.
        assert!(!m(&format!("not {f} and {f}")));
        // (not T) or T == true; not (T or T) would be false.
        assert!(m(&format!("not {t} or {t}")));
        assert!(m(&format!("not not {t}")));
        assert!(!m(&format!("not {t}")));
    }

    #[test]
    fn parentheses_override_precedence() {
        let t = "Service.Service == redis";
        let f = "Service.Service == nope";
        assert!(!m(&format!("({t} or {f}) and {f}")));
        assert!(m(&format!("not ({f} and {t})")));
        assert!(!m(&format!("not ({t} or {f})")));
        assert!(m(&format!("((({t})))")));
        assert!(m(&format!("not({f})")));
    }

    #[test]
    fn bracket_selectors() {
        assert!(m(r#"Service.Meta["env"] == prod"#));
        assert!(m(r#"Node.Meta["my-key"] == "dashed""#));
        assert!(m(r#"Node["Meta"]["my-key"] == dashed"#));
        assert!(m("Node.Meta[`my-key`] == dashed"));
        assert!(m(r#"Node.Meta[ "my-key" ] == dashed"#));
        assert!(m(r#"Node["Meta"].instance_type == "t2.medium""#));
        assert!(m(r#""dashed" in Node["Meta"]["my-key"]"#));
        assert!(m(r#"Service.Meta["missing"] is empty"#));
        assert!(m_on(r#"Meta["a.b"] == c"#, json!({"Meta": {"a.b": "c"}})));
    }

    #[test]
    fn dotted_map_keys() {
        assert!(m("Node.Meta.instance_type == t2.medium"));
        assert!(m(r#"Service.Meta.redis_version == "4.0""#));
        assert!(m(r#"Node.TaggedAddresses.lan == "10.1.10.12""#));
    }

    #[test]
    fn backtick_strings_are_raw() {
        assert!(m_on(r"Path == `C:\temp\n`", json!({"Path": "C:\\temp\\n"})));
        assert!(m(r"Service.Meta.redis_version matches `^4\.0$`"));
        assert!(m("Service.ID == `redis-1`"));
        assert!(m_on(r#"Q == `say "hi"`"#, json!({"Q": "say \"hi\""})));
    }

    #[test]
    fn double_quoted_escapes() {
        let row = json!({"Name": "a\"b\\c\n\u{e9}\t"});
        assert!(m_on(r#"Name == "a\"b\\c\n\u00e9\t""#, row.clone()));
        assert!(m_on(r#"Name == "a\x22b\x5cc\012\U000000e9\t""#, row));
        assert!(m_on(r#"Name == "héllo""#, json!({"Name": "héllo"})));
    }

    #[test]
    fn bare_values() {
        assert!(m("Service.Service == redis"));
        assert!(m("Service.ID == redis-1"));
        assert!(m("Node.Address == 10.1.10.12"));
        assert!(m_on("Kind == connect-proxy", json!({"Kind": "connect-proxy"})));
        assert!(m_on("Addr == unix:/tmp/sock", json!({"Addr": "unix:/tmp/sock"})));
    }

    #[test]
    fn path_through_array_matches_any_element() {
        assert!(m(r#"Checks.Status == "critical""#));
        assert!(m(r#"Checks.Status == "passing""#));
        assert!(!m(r#"Checks.Status == "warning""#));
        // Negated forms are "any element differs", as in bexpr.
        assert!(m(r#"Checks.Status != "passing""#));
        let all_passing = json!({"Checks": [{"Status": "passing"}, {"Status": "passing"}]});
        assert!(!m_on(r#"Checks.Status != "passing""#, all_passing.clone()));
        assert!(m_on(r#"not (Checks.Status != "passing")"#, all_passing));
        // An empty array makes every such match false.
        let none = json!({"Checks": []});
        assert!(!m_on(r#"Checks.Status == "passing""#, none.clone()));
        assert!(!m_on(r#"Checks.Status != "passing""#, none));
        assert!(m("Checks.ServiceTags contains primary"));
        assert!(m("Checks.Output is empty"));
        assert!(m(r#"Checks.CheckID == serfHealth and Checks.Status == critical"#));
    }

    #[test]
    fn keywords_need_word_boundaries() {
        let row = json!({"Notes": "n", "nothing": 1, "index": ["a"], "order": "x", "android": "y", "isx": "z"});
        assert!(m_on("Notes == n", row.clone()));
        assert!(m_on("nothing == 1", row.clone()));
        assert!(m_on("not nothing == 2", row.clone()));
        assert!(m_on("a in index", row.clone()));
        assert!(m_on("order == q or android == y", row.clone()));
        assert!(m_on("isx is not empty and order == x", row));
    }

    #[test]
    fn whitespace_is_insignificant() {
        assert!(m(r#"Service.ID=="redis-1"and(Service.Port==8000)"#));
        assert!(m("\n\tService.Port\r\n==\t8000  \n"));
        assert!(m(r#"("v1"in Service.Tags)or(Service.Port!=1)"#));
    }

    #[test]
    fn non_object_rows_select_missing() {
        let f = parse("Foo is empty");
        assert!(f.matches(&json!(5)));
        assert!(f.matches(&json!(null)));
        assert!(!parse("Foo == 1").matches(&json!("x")));
    }

    #[test]
    fn error_missing_operator_reports_position() {
        let e = perr("Service.Port 8000");
        assert_eq!(e.offset, 13);
        assert!(e.message.starts_with("filter: 1:14 (13): no match found, expected: "), "{}", e.message);
        assert!(e.message.contains(r#""==""#));
        assert!(e.message.contains(r#""!=""#));
        assert!(e.message.contains(r#"found: "8000""#), "{}", e.message);
        assert_eq!(e.to_string(), e.message);
    }

    #[test]
    fn error_positions_on_later_lines() {
        let e = perr("Service.ID == web\nand Service.Port 1");
        assert_eq!(e.offset, 35);
        assert!(e.message.starts_with("filter: 2:18 (35):"), "{}", e.message);
    }

    #[test]
    fn error_unterminated_strings() {
        let e = perr(r#"Service.ID == "abc"#);
        assert_eq!(e.offset, 14);
        assert!(e.message.contains("unterminated string literal"));
        let e = perr("Service.ID == `abc");
        assert_eq!(e.offset, 14);
        assert!(e.message.contains("unterminated raw string literal"));
        let e = perr(r#"Service.Meta["abc == x"#);
        assert_eq!(e.offset, 13);
    }

    #[test]
    fn error_invalid_escape() {
        let e = perr(r#"Service.ID == "a\qb""#);
        assert_eq!(e.offset, 16);
        assert!(e.message.contains("invalid escape"), "{}", e.message);
        let e = perr(r#"Service.ID == "\u12""#);
        assert_eq!(e.offset, 15);
        let e = perr(r#"Service.ID == "\uD800""#);
        assert_eq!(e.offset, 15);
    }

    #[test]
    fn error_trailing_input_and_unbalanced_parens() {
        let e = perr("Service.ID == web )");
        assert_eq!(e.offset, 18);
        assert!(e.message.contains(r#"expected: "and", "or" or end of input"#), "{}", e.message);
        let e = perr("(Service.ID == web");
        assert_eq!(e.offset, 18);
        assert!(e.message.contains("found: end of input"), "{}", e.message);
        let e = perr("Service.ID == web and");
        assert_eq!(e.offset, 21);
        let e = perr("()");
        assert_eq!(e.offset, 1);
    }

    #[test]
    fn error_empty_and_incomplete_expressions() {
        assert_eq!(perr("").offset, 0);
        assert_eq!(perr("   ").offset, 3);
        let e = perr("Service.Tags is");
        assert_eq!(e.offset, 15);
        assert!(e.message.contains(r#"expected: "empty" or "not""#), "{}", e.message);
        let e = perr("Service.Tags is not");
        assert!(e.message.contains(r#"expected: "empty","#), "{}", e.message);
        let e = perr("Service.Tags not foo");
        assert_eq!(e.offset, 17);
        assert!(e.message.contains(r#""contains", "in" or "matches""#));
        let e = perr("Service.ID ==");
        assert_eq!(e.offset, 13);
        let e = perr(r#""x" in"#);
        assert_eq!(e.offset, 6);
        let e = perr("Service.ID = web");
        assert_eq!(e.offset, 11);
    }

    #[test]
    fn error_bad_selectors() {
        // A quoted string cannot be a selector.
        let e = perr(r#""redis" == Service.Service"#);
        assert_eq!(e.offset, 0);
        assert!(e.message.contains("expected a selector"));
        // Dashes need the bracket form.
        let e = perr("Node.Meta.my-key == dashed");
        assert_eq!(e.offset, 0);
        assert!(e.message.contains(r#"invalid selector "Node.Meta.my-key""#), "{}", e.message);
        let e = perr(r#""x" in Node.Meta.my-key"#);
        assert_eq!(e.offset, 7);
        assert!(e.message.contains("invalid selector"));
        let e = perr("80 == Service.Port");
        assert_eq!(e.offset, 0);
        let e = perr("Service. == x");
        assert_eq!(e.offset, 0);
        let e = perr(r#"Meta[key] == x"#);
        assert_eq!(e.offset, 5);
        let e = perr(r#"Meta["a"] in Tags"#);
        assert_eq!(e.offset, 0);
        let e = perr(r#""x" in "Tags""#);
        assert_eq!(e.offset, 7);
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{}Service.ID == web{}", "(".repeat(64), ")".repeat(64));
        assert!(!m(&ok));
        let bad = format!("{}Service.ID == web{}", "(".repeat(65), ")".repeat(65));
        let e = perr(&bad);
        assert_eq!(e.offset, 64);
        assert!(e.message.contains("maximum depth of 64"), "{}", e.message);

        let ok = format!("{}Service.Service == redis", "not ".repeat(64));
        assert!(m(&ok)); // an even number of nots leaves a true match true
        let e = perr(&format!("{}Service.ID == web", "not ".repeat(65)));
        assert_eq!(e.offset, 256);
        // Mixed nesting counts both.
        let e = perr(&format!("{}Service.ID == web{}", "not (".repeat(33), ")".repeat(33)));
        assert!(e.message.contains("maximum depth"));
        // Long flat chains are not nesting.
        let chain = vec!["Service.ID == web"; 150].join(" or ");
        assert!(chain.len() <= MAX_EXPRESSION_LEN);
        assert!(!m(&chain));
    }

    #[test]
    fn length_limit() {
        let e = perr(&format!("Service.ID == \"{}\"", "a".repeat(4096)));
        assert_eq!(e.offset, 4096);
        assert!(e.message.contains("4096"), "{}", e.message);
        // Exactly at the limit is fine.
        let prefix = "Service.ID == \"";
        let exact = format!("{prefix}{}\"", "a".repeat(4096 - prefix.len() - 1));
        assert_eq!(exact.len(), 4096);
        assert!(Filter::parse(&exact).is_ok());
    }

    #[test]
    fn validate_shape_follows_fields_maps_and_lists() {
        let shape = json!({"Node": {"Node": "", "Meta": {}}, "Checks": [], "Service": null, "Port": 0});
        parse("Node.Node == x").validate_shape(&shape).unwrap();
        parse(r#"Node.Meta["any-key"] == x"#).validate_shape(&shape).unwrap();
        parse("Checks.Status == passing").validate_shape(&shape).unwrap();
        parse("Service.Anything == x").validate_shape(&shape).unwrap();
        let e = parse("Nope == x").validate_shape(&shape).unwrap_err();
        assert_eq!(e.message, r#"Selector "Nope" is not valid"#);
        assert!(parse("Node.Nope == x").validate_shape(&shape).is_err());
        assert!(parse("Port.Deeper == 1").validate_shape(&shape).is_err());
        assert!(parse("x == 1 or Bad is empty").validate_shape(&shape).is_err());
    }

    #[test]
    fn validate_selectors_checks_first_segment() {
        let fields = ["Node", "Service", "Checks"];
        let f = parse(r#"Service.ID == web and ("primary" in Service.Tags or Checks.Status == passing)"#);
        assert!(f.validate_selectors(&fields).is_ok());
        assert!(parse(r#"Node.Meta["my-key"] == x"#).validate_selectors(&fields).is_ok());

        let f = parse("Service.ID == web and Bogus.X == 1");
        let e = f.validate_selectors(&fields).unwrap_err();
        assert_eq!(e.message, r#"Selector "Bogus.X" is not valid"#);
        assert_eq!(e.offset, 22);

        let e = parse(r#""x" in Foo"#).validate_selectors(&fields).unwrap_err();
        assert_eq!(e.message, r#"Selector "Foo" is not valid"#);
        assert_eq!(e.offset, 7);

        // Case-sensitive, like Consul's field names.
        assert!(parse("service.ID == x").validate_selectors(&fields).is_err());
        // Selectors under `not` are checked too.
        assert!(parse("not Nope is empty").validate_selectors(&fields).is_err());
    }

    #[test]
    fn apply_filters_rows() {
        let mut web = entry();
        web["Service"]["Service"] = json!("web");
        let rows = vec![entry(), web];

        assert_eq!(apply(None, rows.clone()).unwrap().len(), 2);
        assert_eq!(apply(Some(""), rows.clone()).unwrap().len(), 2);

        let out = apply(Some("Service.Service == web"), rows.clone()).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["Service"]["Service"], json!("web"));

        let out = apply(Some("Service.Port == 8000"), rows.clone()).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["Service"]["Service"], json!("redis"));

        let e = apply(Some("Service.Service =="), rows).unwrap_err();
        assert_eq!(e.offset, 18);
    }

    #[test]
    fn filter_is_reusable_and_cloneable() {
        let f = parse(r#"Service.Tags contains "v1" and Service.Port == 8000"#);
        let g = f.clone();
        for _ in 0..3 {
            assert!(f.matches(&entry()));
            assert!(g.matches(&entry()));
        }
        assert!(!f.matches(&json!({})));
    }
}
