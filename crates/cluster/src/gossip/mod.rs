//! The LAN and WAN gossip pools (to come: foca SWIM, keyring). What exists already is what rides on
//! them: [`user_events`], each agent's buffer of the user events it accepted.

pub mod user_events;
