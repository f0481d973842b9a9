//! Strict type checks for request bodies that handlers read as JSON values rather than through a
//! derived `Deserialize` (service, check and session definitions, which Consul decodes with its own
//! tolerances). Go's `encoding/json` refuses a value of the wrong type for a struct field, and Consul
//! answers that with 400 `Request decode failed: json: cannot unmarshal number into Go struct field
//! Session.TTL of type string`; these checks give the same answer instead of a silent default.
//!
//! What Go tolerates is tolerated here too: `null` for any field (the zero value), unknown fields
//! (ignored), and durations written as a string (`"10s"`) or a number of nanoseconds, which
//! Consul's `CheckType` and `Session` decoders accept. Keys must already be canonical
//! ([`crate::normalize`]).

use serde_json::Value;

/// The Go type of a field, as far as decoding cares.
#[derive(Debug)]
pub enum Ty {
    Str,
    Bool,
    /// A signed integer (`int`): a number without a fraction.
    Int,
    /// An unsigned integer (`uint64`).
    Uint,
    /// A `time.Duration` that Consul decodes from a string or a number.
    Dur,
    List(&'static Ty),
    /// A map with string keys.
    Map(&'static Ty),
    Obj(&'static Schema),
    /// Kept as given (Consul passes it through, e.g. `Proxy` or `Connect`), but must be an object.
    AnyObj,
}

/// A Go struct: its name (for messages) and its fields by canonical name.
#[derive(Debug)]
pub struct Schema {
    pub name: &'static str,
    pub fields: &'static [(&'static str, Ty)],
}

/// Checks `v` against `schema`; the error is Go's message (without Consul's `Request decode
/// failed: ` prefix).
pub fn check(v: &Value, schema: &Schema) -> Result<(), String> {
    match v {
        Value::Object(_) => check_obj(v, schema, ""),
        Value::Null => Ok(()),
        other => {
            Err(format!("json: cannot unmarshal {} into Go value of type structs.{}", go_kind(other), schema.name))
        }
    }
}

fn check_obj(v: &Value, schema: &Schema, path: &str) -> Result<(), String> {
    let Value::Object(m) = v else { unreachable!("check_obj on a non-object") };
    for (name, ty) in schema.fields {
        let Some(fv) = m.get(*name) else { continue };
        let p = if path.is_empty() { (*name).to_string() } else { format!("{path}.{name}") };
        check_value(fv, ty, schema, &p)?;
    }
    Ok(())
}

fn check_value(v: &Value, ty: &Ty, owner: &Schema, path: &str) -> Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    let bad = |want: &str| {
        Err(format!("json: cannot unmarshal {} into Go struct field {}.{path} of type {want}", go_kind(v), owner.name))
    };
    match ty {
        Ty::Str => {
            if v.is_string() {
                Ok(())
            } else {
                bad("string")
            }
        }
        Ty::Bool => {
            if v.is_boolean() {
                Ok(())
            } else {
                bad("bool")
            }
        }
        Ty::Int => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() && n.as_u64().is_some_and(|u| u <= i64::MAX as u64) => Ok(()),
            _ => bad("int"),
        },
        Ty::Uint => match v {
            Value::Number(n) if n.is_u64() => Ok(()),
            _ => bad("uint64"),
        },
        Ty::Dur => match v {
            Value::String(_) => Ok(()),
            Value::Number(n) if n.is_i64() || n.is_u64() || n.is_f64() => Ok(()),
            _ => bad("time.Duration"),
        },
        Ty::List(inner) => match v {
            Value::Array(a) => a.iter().try_for_each(|x| check_value(x, inner, owner, path)),
            _ => bad(&format!("[]{}", go_name(inner))),
        },
        Ty::Map(inner) => match v {
            Value::Object(m) => m.values().try_for_each(|x| check_value(x, inner, owner, path)),
            _ => bad(&format!("map[string]{}", go_name(inner))),
        },
        Ty::Obj(s) => match v {
            Value::Object(_) => check_obj(v, s, path),
            _ => bad(&format!("structs.{}", s.name)),
        },
        Ty::AnyObj => {
            if v.is_object() {
                Ok(())
            } else {
                bad("struct")
            }
        }
    }
}

/// How Go's decoder names the JSON value it could not place.
fn go_kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) if n.is_f64() => format!("number {n}"),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

fn go_name(t: &Ty) -> String {
    match t {
        Ty::Str => "string".into(),
        Ty::Bool => "bool".into(),
        Ty::Int => "int".into(),
        Ty::Uint => "uint64".into(),
        Ty::Dur => "time.Duration".into(),
        Ty::List(i) => format!("[]{}", go_name(i)),
        Ty::Map(i) => format!("map[string]{}", go_name(i)),
        Ty::Obj(s) => format!("structs.{}", s.name),
        Ty::AnyObj => "struct".into(),
    }
}

// ---- The bodies Consul decodes this way ------------------------------------------------------

const STR_LIST: Ty = Ty::List(&Ty::Str);

/// `structs.CheckType` / `CheckDefinition`: `/v1/agent/check/register` and a service's checks.
pub static CHECK: Schema = Schema {
    name: "CheckDefinition",
    fields: &[
        ("ID", Ty::Str),
        ("CheckID", Ty::Str),
        ("Name", Ty::Str),
        ("Notes", Ty::Str),
        ("ServiceID", Ty::Str),
        ("Status", Ty::Str),
        ("Token", Ty::Str),
        ("ScriptArgs", STR_LIST),
        ("Args", STR_LIST),
        ("Script", Ty::Str),
        ("HTTP", Ty::Str),
        ("Header", Ty::Map(&STR_LIST)),
        ("Method", Ty::Str),
        ("Body", Ty::Str),
        ("DisableRedirects", Ty::Bool),
        ("TCP", Ty::Str),
        ("UDP", Ty::Str),
        ("GRPC", Ty::Str),
        ("GRPCUseTLS", Ty::Bool),
        ("H2PING", Ty::Str),
        ("H2PingUseTLS", Ty::Bool),
        ("OSService", Ty::Str),
        ("DockerContainerID", Ty::Str),
        ("Shell", Ty::Str),
        ("AliasNode", Ty::Str),
        ("AliasService", Ty::Str),
        ("TLSServerName", Ty::Str),
        ("TLSSkipVerify", Ty::Bool),
        ("Interval", Ty::Dur),
        ("Timeout", Ty::Dur),
        ("TTL", Ty::Dur),
        ("DeregisterCriticalServiceAfter", Ty::Dur),
        ("SuccessBeforePassing", Ty::Int),
        ("FailuresBeforeWarning", Ty::Int),
        ("FailuresBeforeCritical", Ty::Int),
        ("OutputMaxSize", Ty::Int),
    ],
};

static SERVICE_ADDRESS: Schema = Schema { name: "ServiceAddress", fields: &[("Address", Ty::Str), ("Port", Ty::Int)] };
static WEIGHTS: Schema = Schema { name: "Weights", fields: &[("Passing", Ty::Int), ("Warning", Ty::Int)] };

/// `structs.ServiceDefinition`: `/v1/agent/service/register` and service definitions in files.
pub static SERVICE: Schema = Schema {
    name: "ServiceDefinition",
    fields: &[
        ("Kind", Ty::Str),
        ("ID", Ty::Str),
        ("Name", Ty::Str),
        ("Tags", STR_LIST),
        ("Address", Ty::Str),
        ("TaggedAddresses", Ty::Map(&Ty::Obj(&SERVICE_ADDRESS))),
        ("Meta", Ty::Map(&Ty::Str)),
        ("Port", Ty::Int),
        ("SocketPath", Ty::Str),
        ("Check", Ty::Obj(&CHECK)),
        ("Checks", Ty::List(&Ty::Obj(&CHECK))),
        ("Weights", Ty::Obj(&WEIGHTS)),
        ("Token", Ty::Str),
        ("EnableTagOverride", Ty::Bool),
        ("Proxy", Ty::AnyObj),
        ("Connect", Ty::AnyObj),
        ("Locality", Ty::AnyObj),
        ("Namespace", Ty::Str),
        ("Partition", Ty::Str),
    ],
};

static SERVICE_CHECK_REF: Schema = Schema { name: "ServiceCheck", fields: &[("ID", Ty::Str), ("Namespace", Ty::Str)] };

/// `structs.Session`: `/v1/session/create`. `TTL` is a string there; `LockDelay` a duration.
pub static SESSION: Schema = Schema {
    name: "Session",
    fields: &[
        ("ID", Ty::Str),
        ("Name", Ty::Str),
        ("Node", Ty::Str),
        ("NodeChecks", STR_LIST),
        ("Checks", STR_LIST),
        ("ServiceChecks", Ty::List(&Ty::Obj(&SERVICE_CHECK_REF))),
        ("LockDelay", Ty::Dur),
        ("Behavior", Ty::Str),
        ("TTL", Ty::Str),
        ("Namespace", Ty::Str),
        ("Partition", Ty::Str),
    ],
};

/// `PUT /v1/agent/check/update/:id`.
pub static CHECK_UPDATE: Schema = Schema { name: "checkUpdate", fields: &[("Status", Ty::Str), ("Output", Ty::Str)] };

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_are_refused_with_gos_message() {
        let e = check(&json!({"TTL": 30}), &SESSION).unwrap_err();
        assert_eq!(e, "json: cannot unmarshal number into Go struct field Session.TTL of type string");
        let e = check(&json!({"Name": "web", "ID": 7}), &SERVICE).unwrap_err();
        assert!(e.contains("ServiceDefinition.ID of type string"), "{e}");
        let e = check(&json!({"Name": "x", "ServiceID": false}), &CHECK).unwrap_err();
        assert!(e.contains("CheckDefinition.ServiceID of type string"), "{e}");
        let e = check(&json!({"Name": "w", "Check": {"TTL": true}}), &SERVICE).unwrap_err();
        assert!(e.contains("CheckDefinition.Check.TTL of type time.Duration"), "Go names the innermost struct: {e}");
        let e = check(&json!({"Port": 1.5}), &SERVICE).unwrap_err();
        assert!(e.contains("number 1.5"), "{e}");
        let e = check(&json!({"Meta": {"a": 1}}), &SERVICE).unwrap_err();
        assert!(e.contains("ServiceDefinition.Meta of type string"), "{e}");
        assert!(check(&json!([1]), &SESSION).is_err());
    }

    #[test]
    fn what_go_tolerates_passes() {
        check(&json!({"TTL": null, "Node": "n", "Unknown": [1, 2], "LockDelay": 15}), &SESSION).unwrap();
        check(&json!({"LockDelay": "15s", "ServiceChecks": [{"ID": "a"}]}), &SESSION).unwrap();
        check(&json!({"Name": "w", "Check": {"Interval": 10000000000u64, "TTL": "5s"}, "Tags": null}), &SERVICE)
            .unwrap();
        check(&Value::Null, &SESSION).unwrap();
    }
}
