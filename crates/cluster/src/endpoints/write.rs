//! The server side of every write. A server that does not lead forwards the whole request to the
//! leader, which validates it against its state, takes the decisions that depend on time
//! (lock-delay, session TTL timers) or randomness (new IDs), and proposes one [`Command`]. The
//! answer comes back once the entry is applied on the server the caller asked, so a read there
//! right after sees it.

use cairn_types::command::KvOp;
use cairn_types::rpc::{WriteOptions, WriteRequest, WriteResponse, WriteResult};
use cairn_types::structs::ServiceCheckRef;
use cairn_types::txn::TxnError;
use cairn_types::{Command, CommandResult};

use crate::error::Error;
use crate::rpc::proto::{Request, Response};
use crate::server::Server;

/// Runs `req` on the leader (here, or forwarded), waiting out an election for up to
/// `rpc_hold_timeout`.
pub async fn write(server: &Server, req: WriteRequest, _opts: &WriteOptions) -> Result<WriteResponse, Error> {
    server
        .on_leader(
            || on_leader(server, req.clone()),
            || Request::Write(Box::new(req.clone())),
            |r| match r {
                Response::Written(w) => Some(w),
                _ => None,
            },
            |w| w.index,
        )
        .await
}

fn answered(index: u64, result: CommandResult) -> WriteResponse {
    WriteResponse { index, result: WriteResult::Result(result) }
}

/// On the leader: `Err(NotLeader)` when this server does not lead (the caller forwards).
pub(crate) async fn on_leader(server: &Server, req: WriteRequest) -> Result<WriteResponse, Error> {
    let propose = |cmd: Command| server.apply_local(cmd);
    match req {
        WriteRequest::KvsApply { op, entry } => {
            // Lock-delay is a wall-clock decision, taken here on the leader before proposing: an
            // acquire within the delay after the previous holder's session was invalidated just
            // fails (the state machine never reads a clock).
            if op == KvOp::Lock && server.lock_delayed(&entry.key) {
                server.check_leads()?;
                return Ok(answered(0, CommandResult::Bool(false)));
            }
            let a = propose(Command::Kv(cairn_types::command::KvRequest { op, entry })).await?;
            Ok(answered(a.index, a.result))
        }
        WriteRequest::CatalogRegister(r) => {
            let a = propose(Command::Register(r)).await?;
            Ok(answered(a.index, a.result))
        }
        WriteRequest::CatalogDeregister(r) => {
            let a = propose(Command::Deregister(r)).await?;
            Ok(answered(a.index, a.result))
        }
        WriteRequest::CatalogSync(cmds) => {
            if !cmds.iter().all(|c| matches!(c, Command::Register(_) | Command::Deregister(_))) {
                return Err(Error::Rejected(cairn_types::Error::invalid(
                    "a catalog sync holds only registrations and deregistrations",
                )));
            }
            let a = propose(Command::Batch(cmds)).await?;
            Ok(answered(a.index, a.result))
        }
        WriteRequest::SessionCreate { mut session, legacy_checks } => {
            server.check_leads()?;
            session.id = uuid::Uuid::new_v4().to_string();
            // Consul: with neither NodeChecks nor the deprecated Checks given, a session is bound
            // to the node's serfHealth (the caller sends `[serfHealth]` then). Deprecated Checks
            // entries are node or service checks, by what they name on the session's node.
            let st = server.store().snapshot();
            for id in legacy_checks {
                match st.checks.get(&(session.node.clone(), id.clone())) {
                    Some(c) if !c.service_id.is_empty() => {
                        session.service_checks.push(ServiceCheckRef { id, namespace: String::new() })
                    }
                    _ => session.node_checks.push(id),
                }
            }
            let id = session.id.clone();
            let ttl = cairn_types::duration::parse(&session.ttl).unwrap_or_default();
            let a = propose(Command::SessionCreate(session)).await?;
            if let CommandResult::Error(e) = a.result {
                return Ok(answered(a.index, CommandResult::Error(e)));
            }
            if !ttl.is_zero() {
                crate::leader::reset_session_timer(server, &id, ttl);
            }
            Ok(WriteResponse { index: a.index, result: WriteResult::Id(id) })
        }
        WriteRequest::SessionDestroy { id } => {
            let a = propose(Command::SessionDestroy(id)).await?;
            Ok(answered(a.index, a.result))
        }
        WriteRequest::SessionRenew { id } => {
            // Renewals are the leader's: it keeps the TTL timers (Consul forwards them too). It
            // reads at its read point, so a session created just before is found.
            server.check_leads()?;
            server.default_barrier().await?;
            let (index, sess) = server.store().snapshot().session_get(&id);
            let sess = sess.ok_or_else(|| {
                Error::Rejected(cairn_types::Error::not_found(format!("Session id '{id}' not found")))
            })?;
            if let Ok(ttl) = cairn_types::duration::parse(&sess.ttl) {
                if !ttl.is_zero() {
                    crate::leader::reset_session_timer(server, &id, ttl);
                }
            }
            Ok(WriteResponse { index, result: WriteResult::Session(sess) })
        }
        WriteRequest::TxnApply(ops) => {
            // Lock-delay is the leader's wall-clock decision, taken before proposing.
            let delayed: Vec<TxnError> = ops
                .iter()
                .enumerate()
                .filter_map(|(i, op)| {
                    op.kv.as_ref().filter(|k| k.verb == "lock" && server.lock_delayed(&k.key)).map(|k| (i, k))
                })
                .map(|(i, k)| TxnError {
                    op_index: i,
                    what: format!("failed to lock key {:?} due to lock delay", k.key),
                })
                .collect();
            if !delayed.is_empty() {
                server.check_leads()?;
                return Ok(answered(0, CommandResult::TxnErrors(delayed)));
            }
            let a = propose(Command::Txn(ops)).await?;
            Ok(answered(a.index, a.result))
        }
        WriteRequest::PreparedQueryCreate(mut q) => {
            server.check_leads()?;
            q.id = uuid::Uuid::new_v4().to_string();
            let id = q.id.clone();
            let a = propose(Command::QuerySet(q)).await?;
            match a.result {
                CommandResult::Error(e) => Ok(answered(a.index, CommandResult::Error(e))),
                _ => Ok(WriteResponse { index: a.index, result: WriteResult::Id(id) }),
            }
        }
        WriteRequest::PreparedQueryUpdate(q) => {
            server.check_leads()?;
            if !server.store().snapshot().queries.contains_key(&q.id) {
                return Err(Error::Rejected(cairn_types::Error::not_found(format!("Query not found: {}", q.id))));
            }
            let a = propose(Command::QuerySet(q)).await?;
            Ok(answered(a.index, a.result))
        }
        WriteRequest::PreparedQueryDelete { id } => {
            let a = propose(Command::QueryDelete(id)).await?;
            Ok(answered(a.index, a.result))
        }
        WriteRequest::CoordinateUpdate(entries) => {
            let a = propose(Command::CoordinateBatchUpdate(entries)).await?;
            Ok(answered(a.index, a.result))
        }
    }
}
