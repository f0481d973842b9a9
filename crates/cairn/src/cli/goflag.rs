//! Command lines parsed the way Consul's are: subcommands dispatched as mitchellh/cli does, flags
//! as Go's `flag` package reads them. clap only converts the values afterwards.
//!
//! Go's rules, which operators' scripts rely on:
//! - flags come first; the first argument that is not a flag (or a lone `-`) ends them, and so
//!   does `--`: `kv put key -foo` stores the value `-foo`, `lock prefix ls -la` passes `-la` on;
//! - `-flag` and `--flag` are the same; `-flag=value` and `-flag value` both work, and a value flag
//!   always takes the next argument, whatever it starts with;
//! - a boolean takes `-b`, `-b=true` or `-b=false` (never `-b false`);
//! - an unknown flag is `flag provided but not defined: -x` (exit 1);
//! - `-h`, `-help` or `--help` anywhere before `--` prints the command's help (exit 0);
//! - an unknown command prints the list of commands to stderr (exit 127).
//!
//! The result is an argument vector clap cannot misread: every flag as `--name=value` (each
//! boolean once, at its last setting), then `--`, then the positional arguments verbatim.

use std::collections::HashMap;

use clap::{Arg, ArgAction, Command};

/// What to do instead of running a command.
#[derive(Debug, PartialEq, Eq)]
pub struct Stop {
    /// Printed to stdout when the code is 0, else to stderr.
    pub text: String,
    pub code: i32,
}

impl Stop {
    fn err(text: impl Into<String>, code: i32) -> Self {
        Stop { text: text.into(), code }
    }
}

fn is_help(a: &str) -> bool {
    matches!(a, "-h" | "-help" | "--help")
}

fn help_of(cmd: &Command) -> String {
    cmd.clone().render_help().to_string()
}

/// Rewrites `args` (with the program name first) for clap, or says why not to run at all.
pub fn normalize(root: &Command, args: Vec<String>) -> Result<Vec<String>, Stop> {
    let mut it = args.into_iter();
    let bin = it.next().unwrap_or_else(|| "cairn".into());
    let rest: Vec<String> = it.collect();
    let Some(first) = rest.first() else {
        return Err(Stop::err(help_of(root), 127));
    };
    if matches!(first.as_str(), "-v" | "-version" | "--version") {
        return Ok(vec![bin, "version".into()]);
    }
    if is_help(first) {
        return Err(Stop::err(help_of(root), 0));
    }
    if first.starts_with('-') {
        return Err(Stop::err(
            format!(
                "Invalid flags before the subcommand. If these flags are for\nthe subcommand, please put them after the subcommand.\n\n{}",
                help_of(root)
            ),
            1,
        ));
    }
    // The command path: as many words as name nested subcommands.
    let mut out = vec![bin];
    let mut cur = root;
    let mut i = 0;
    while i < rest.len() && cur.has_subcommands() {
        let word = &rest[i];
        if word.starts_with('-') {
            break;
        }
        match cur.find_subcommand(word) {
            Some(sub) => {
                out.push(sub.get_name().to_string());
                cur = sub;
                i += 1;
            }
            None if std::ptr::eq(cur, root) => return Err(Stop::err(help_of(root), 127)),
            None => break,
        }
    }
    if cur.has_subcommands() {
        // A parent command alone (`cairn kv`): its help, as a failure.
        let wants_help = rest[i..].iter().any(|a| is_help(a));
        return Err(Stop::err(help_of(cur), if wants_help { 0 } else { 1 }));
    }
    let rest = &rest[i..];
    let before_dashes = rest.iter().take_while(|a| a.as_str() != "--");
    if before_dashes.into_iter().any(|a| is_help(a)) {
        return Err(Stop::err(help_of(cur), 0));
    }
    let (flags, positionals) = parse_flags(cur, rest)?;
    out.extend(flags);
    if !positionals.is_empty() {
        out.push("--".into());
        out.extend(positionals);
    }
    Ok(out)
}

fn find_flag<'a>(cmd: &'a Command, name: &str) -> Option<&'a Arg> {
    cmd.get_arguments().filter(|a| !a.is_positional()).find(|a| {
        a.get_long() == Some(name)
            || a.get_all_aliases().is_some_and(|al| al.contains(&name))
            || (name.chars().count() == 1 && a.get_short() == name.chars().next())
    })
}

/// A flag with no value of its own: `-b` means true.
fn is_bool(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count)
}

/// A boolean that clap stores as a value (`-shell=false` with a default of true).
fn is_valued_bool(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Set) && a.get_num_args().is_some_and(|r| r.min_values() == 0)
}

/// Go's `strconv.ParseBool`.
pub fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn spelled(a: &Arg) -> String {
    match (a.get_long(), a.get_short()) {
        (Some(l), _) => format!("--{l}"),
        (None, Some(s)) => format!("-{s}"),
        (None, None) => unreachable!("a flag without a name"),
    }
}

fn usage_error(cmd: &Command, msg: String) -> Stop {
    Stop::err(format!("{msg}\n{}", help_of(cmd)), 1)
}

/// Go's flag loop over `args`: returns the flags for clap and the positional arguments.
fn parse_flags(cmd: &Command, args: &[String]) -> Result<(Vec<String>, Vec<String>), Stop> {
    // One entry per flag, in first-seen order; value flags that accumulate keep every value.
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, Vec<String>> = HashMap::new();
    let mut i = 0;
    while i < args.len() {
        let s = &args[i];
        if s.len() < 2 || !s.starts_with('-') {
            break;
        }
        i += 1;
        if s == "--" {
            break;
        }
        let body = s.strip_prefix("--").unwrap_or(&s[1..]);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(usage_error(cmd, format!("bad flag syntax: {s}")));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(arg) = find_flag(cmd, name) else {
            return Err(usage_error(cmd, format!("flag provided but not defined: -{name}")));
        };
        let id = arg.get_id().to_string();
        let token = if is_bool(arg) || is_valued_bool(arg) {
            let v = match &inline {
                None => true,
                Some(v) => go_bool(v)
                    .ok_or_else(|| usage_error(cmd, format!("invalid boolean value {v:?} for -{name}: parse error")))?,
            };
            match (is_bool(arg), v) {
                (true, true) => Some(spelled(arg)),
                (true, false) => None,
                (false, v) => Some(format!("{}={v}", spelled(arg))),
            }
        } else {
            let v = match inline {
                Some(v) => v,
                None => {
                    let Some(v) = args.get(i) else {
                        return Err(usage_error(cmd, format!("flag needs an argument: -{name}")));
                    };
                    i += 1;
                    v.clone()
                }
            };
            Some(format!("{}={v}", spelled(arg)))
        };
        if !values.contains_key(&id) {
            order.push(id.clone());
        }
        let slot = values.entry(id).or_default();
        let accumulates = matches!(arg.get_action(), ArgAction::Append);
        if !accumulates {
            // The last setting wins, as in Go.
            slot.clear();
        }
        slot.extend(token);
    }
    let flags = order.into_iter().flat_map(|id| values.remove(&id).unwrap_or_default()).collect();
    Ok((flags, args[i..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn norm(s: &[&str]) -> Result<Vec<String>, Stop> {
        normalize(&crate::cli::Cli::command(), v(s))
    }

    #[test]
    fn values_that_begin_with_a_dash_are_values() {
        assert_eq!(
            norm(&["cairn", "kv", "put", "dash/val", "-foo"]).unwrap(),
            v(&["cairn", "kv", "put", "--", "dash/val", "-foo"])
        );
        assert_eq!(
            norm(&["cairn", "kv", "put", "-flags", "42", "k", "-Xmx512m"]).unwrap(),
            v(&["cairn", "kv", "put", "--flags=42", "--", "k", "-Xmx512m"])
        );
        assert_eq!(
            norm(&["cairn", "kv", "put", "--", "-k", "v"]).unwrap(),
            v(&["cairn", "kv", "put", "--", "-k", "v"])
        );
        assert_eq!(norm(&["cairn", "kv", "put", "k", "-"]).unwrap(), v(&["cairn", "kv", "put", "--", "k", "-"]));
        // A value flag takes the next argument whatever it is.
        assert_eq!(
            norm(&["cairn", "kv", "put", "-session", "-x", "k"]).unwrap(),
            v(&["cairn", "kv", "put", "--session=-x", "--", "k"])
        );
    }

    #[test]
    fn booleans_as_go_reads_them() {
        assert_eq!(
            norm(&["cairn", "kv", "get", "-recurse=false", "k"]).unwrap(),
            v(&["cairn", "kv", "get", "--", "k"])
        );
        assert_eq!(
            norm(&["cairn", "kv", "get", "-stale=true", "--recurse", "k"]).unwrap(),
            v(&["cairn", "kv", "get", "--stale", "--recurse", "--", "k"])
        );
        assert_eq!(norm(&["cairn", "agent", "-dev=true"]).unwrap(), v(&["cairn", "agent", "--dev"]));
        assert_eq!(
            norm(&["cairn", "lock", "-shell=false", "-n=2", "p", "ls", "-la"]).unwrap(),
            v(&["cairn", "lock", "--shell=false", "--n=2", "--", "p", "ls", "-la"])
        );
        // `-b false`: the flag is true and `false` is the first positional.
        assert_eq!(
            norm(&["cairn", "kv", "get", "-recurse", "false"]).unwrap(),
            v(&["cairn", "kv", "get", "--recurse", "--", "false"])
        );
        let e = norm(&["cairn", "kv", "get", "-recurse=maybe", "k"]).unwrap_err();
        assert!(e.text.starts_with("invalid boolean value \"maybe\" for -recurse: parse error"), "{}", e.text);
        assert_eq!(e.code, 1);
    }

    #[test]
    fn errors_and_help_as_consul_gives_them() {
        let e = norm(&["cairn", "kv", "put", "-x", "k"]).unwrap_err();
        assert!(e.text.starts_with("flag provided but not defined: -x\n"), "{}", e.text);
        assert_eq!(e.code, 1);
        let e = norm(&["cairn", "kv", "put", "--nope=1", "k"]).unwrap_err();
        assert!(e.text.starts_with("flag provided but not defined: -nope\n"), "{}", e.text);
        let e = norm(&["cairn", "kv", "put", "-flags"]).unwrap_err();
        assert!(e.text.starts_with("flag needs an argument: -flags"), "{}", e.text);
        assert_eq!(norm(&["cairn", "frobnicate"]).unwrap_err().code, 127);
        assert_eq!(norm(&["cairn"]).unwrap_err().code, 127);
        assert_eq!(norm(&["cairn", "kv", "put", "k", "-h"]).unwrap_err().code, 0);
        assert_eq!(norm(&["cairn", "kv"]).unwrap_err().code, 1);
        assert_eq!(norm(&["cairn", "-version"]).unwrap(), v(&["cairn", "version"]));
        assert_eq!(norm(&["cairn", "-foo", "members"]).unwrap_err().code, 1);
    }

    #[test]
    fn what_comes_out_parses() {
        let argv = norm(&["cairn", "kv", "put", "-cas", "-modify-index=5", "k", "-v"]).unwrap();
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let crate::cli::Cmd::Kv { cmd: crate::cli::kv::KvCmd::Put(p) } = cli.cmd else { panic!("not kv put") };
        assert!(p.cas);
        assert_eq!(p.modify_index, Some(5));
        assert_eq!((p.key.as_str(), p.data.as_deref()), ("k", Some("-v")));
    }
}
