//! The `labelSelector` query syntax: a small lexer and a recursive-descent parser that turn
//! `app=web,tier in (a,b),!canary` into [`Requirement`]s, with errors that quote the token where
//! parsing broke off.

use std::fmt;

use super::SelectorError;
use super::label::{Operator, Requirement};

/// Every requirement of `input`; none for an empty or blank string.
pub(super) fn parse(input: &str) -> Result<Vec<Requirement>, SelectorError> {
    let mut parser = Parser { tokens: lex(input), position: 0 };
    let mut requirements = Vec::new();
    if parser.peek().is_none() {
        return Ok(requirements);
    }
    loop {
        requirements.push(parser.requirement()?);
        match parser.next() {
            None => return Ok(requirements),
            Some(Token::Comma) => {}
            found => return Err(syntax(found, "',' or end of input")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Identifier(&'a str),
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Open,
    Close,
    Comma,
    /// `<` and `>` are Kubernetes' `lt`/`gt`, which only node affinity uses; they are lexed to
    /// report them by name rather than as part of a key.
    Less,
    Greater,
}

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Token::Identifier(text) => text,
            Token::Not => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Open => "(",
            Token::Close => ")",
            Token::Comma => ",",
            Token::Less => "<",
            Token::Greater => ">",
        })
    }
}

fn is_special(c: char) -> bool {
    c.is_whitespace() || "!=(),<>".contains(c)
}

/// Splits the input into tokens; every run of other characters is one identifier, which the
/// label rules then judge.
fn lex(input: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let mut followed_by_equals = || chars.next_if(|&(_, c)| c == '=').is_some();
        let token = match c {
            c if c.is_whitespace() => continue,
            '!' if followed_by_equals() => Token::NotEquals,
            '!' => Token::Not,
            '=' if followed_by_equals() => Token::DoubleEquals,
            '=' => Token::Equals,
            '(' => Token::Open,
            ')' => Token::Close,
            ',' => Token::Comma,
            '<' => Token::Less,
            '>' => Token::Greater,
            _ => {
                let mut end = start + c.len_utf8();
                while let Some((i, c)) = chars.next_if(|&(_, c)| !is_special(c)) {
                    end = i + c.len_utf8();
                }
                Token::Identifier(&input[start..end])
            }
        };
        tokens.push(token);
    }
    tokens
}

fn syntax(found: Option<Token<'_>>, expected: &'static str) -> SelectorError {
    let found = found.map_or_else(|| "end of input".to_string(), |t| format!("'{t}'"));
    SelectorError::Syntax { found, expected }
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    position: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.position).copied()
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let token = self.peek();
        self.position += 1;
        token
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let key = match self.next() {
            Some(Token::Not) => {
                return match self.next() {
                    Some(Token::Identifier(key)) => Requirement::new(key, Operator::DoesNotExist, Vec::new()),
                    found => Err(syntax(found, "a label key")),
                };
            }
            Some(Token::Identifier(key)) => key,
            found => return Err(syntax(found, "a label key or '!'")),
        };
        let operator = match self.peek() {
            None | Some(Token::Comma) => {
                return Requirement::new(key, Operator::Exists, Vec::new());
            }
            Some(Token::Equals | Token::DoubleEquals) => Operator::Equals,
            Some(Token::NotEquals) => Operator::NotEquals,
            Some(Token::Identifier("in")) => Operator::In,
            Some(Token::Identifier("notin")) => Operator::NotIn,
            found => {
                return Err(syntax(found, "'=', '==', '!=', 'in', 'notin', ',' or end of input"));
            }
        };
        self.position += 1;
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.value()?],
        };
        Requirement::new(key, operator, values)
    }

    /// A value, possibly empty (`k=` selects an empty label value); a following `,` or `)`
    /// is left for the caller.
    fn value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            Some(Token::Identifier(value)) => {
                self.position += 1;
                Ok(value.to_string())
            }
            None | Some(Token::Comma | Token::Close) => Ok(String::new()),
            found => Err(syntax(found, "a label value")),
        }
    }

    /// `(a,b,c)`; `()` is returned empty for [`Requirement::new`] to reject.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Some(Token::Open) => {}
            found => return Err(syntax(found, "'('")),
        }
        let mut values = Vec::new();
        if self.peek() == Some(Token::Close) {
            self.position += 1;
            return Ok(values);
        }
        loop {
            values.push(self.value()?);
            match self.next() {
                Some(Token::Comma) => {}
                Some(Token::Close) => return Ok(values),
                found => return Err(syntax(found, "',' or ')'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::selector::LabelSelector;

    #[test]
    fn parse_errors_name_the_offending_part() {
        let long_value = format!("app={}", "v".repeat(64));
        for (input, message) in [
            ("app=web,", "unable to parse requirement: found end of input, expected a label key or '!'"),
            ("app=my value", "unable to parse requirement: found 'value', expected ',' or end of input"),
            (
                "app web",
                "unable to parse requirement: found 'web', expected '=', '==', '!=', 'in', 'notin', ',' or end of input",
            ),
            ("=web", "unable to parse requirement: found '=', expected a label key or '!'"),
            ("!", "unable to parse requirement: found end of input, expected a label key"),
            ("env in prod", "unable to parse requirement: found 'prod', expected '('"),
            ("env in (a b)", "unable to parse requirement: found 'b', expected ',' or ')'"),
            ("env in (a", "unable to parse requirement: found end of input, expected ',' or ')'"),
            ("env in ()", "unable to parse requirement: values for 'in' on key \"env\" must not be empty"),
            ("app=(", "unable to parse requirement: found '(', expected a label value"),
            (
                "replicas>2",
                "unable to parse requirement: found '>', expected '=', '==', '!=', 'in', 'notin', ',' or end of input",
            ),
            (
                "-app=web",
                "unable to parse requirement: invalid label key \"-app\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ),
            (
                long_value.as_str(),
                "unable to parse requirement: invalid label value \"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\" for key \"app\": must be no more than 63 characters",
            ),
        ] {
            let error = LabelSelector::parse(input).expect_err(input);
            assert_eq!(error.to_string(), message, "{input:?}");
        }
    }
}
