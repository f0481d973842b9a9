//! `cairn snapshot save|restore|inspect FILE`, as Consul's.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::HttpArgs;

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Saves a snapshot of the state to a file.
    Save(FileArgs),
    /// Restores a snapshot file into the running cluster.
    Restore(FileArgs),
    /// Shows what a snapshot file holds.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
pub struct FileArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    pub file: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub file: Vec<String>,
}

fn one_file(files: &[String]) -> Option<&str> {
    match files {
        [f] => Some(f),
        _ => {
            eprintln!("This command takes one argument: <file>");
            None
        }
    }
}

/// The one file argument's bytes, or the error said.
fn read_file(files: &[String]) -> Option<Vec<u8>> {
    let file = one_file(files)?;
    std::fs::read(file).map_err(|e| eprintln!("Error opening snapshot file: {e}")).ok()
}

pub async fn run(cmd: SnapshotCmd) -> Result<i32> {
    match cmd {
        SnapshotCmd::Save(a) => {
            let Some(file) = one_file(&a.file) else { return Ok(1) };
            let (archive, index) = match a.http.client()?.snapshot_save(&a.http.query()).await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("Error saving snapshot: {e}");
                    return Ok(1);
                }
            };
            // Written to a temporary file first, checked, then moved into place (as Consul does).
            let tmp = format!("{file}.tmp");
            if let Err(e) = std::fs::write(&tmp, &archive) {
                eprintln!("Error writing unverified snapshot file: {e}");
                return Ok(1);
            }
            if let Err(e) = cairn_cluster::snapshot::open(&archive) {
                let _ = std::fs::remove_file(&tmp);
                eprintln!("Error verifying snapshot file: {e}");
                return Ok(1);
            }
            if let Err(e) = std::fs::rename(&tmp, file) {
                eprintln!("Error renaming {tmp:?} to {file:?}: {e}");
                return Ok(1);
            }
            println!("Saved and verified snapshot to index {index}");
            Ok(0)
        }
        SnapshotCmd::Restore(a) => {
            let Some(archive) = read_file(&a.file) else { return Ok(1) };
            if let Err(e) = a.http.client()?.snapshot_restore(archive).await {
                eprintln!("Error restoring snapshot: {e}");
                return Ok(1);
            }
            println!("Restored snapshot");
            Ok(0)
        }
        SnapshotCmd::Inspect(a) => {
            let Some(archive) = read_file(&a.file) else { return Ok(1) };
            match cairn_cluster::snapshot::open(&archive) {
                Ok((m, _)) => {
                    println!(" ID           {}", m.id);
                    println!(" Size         {}", m.size);
                    println!(" Index        {}", m.index);
                    println!(" Term         {}", m.term);
                    println!(" Version      {}", m.version);
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("Error inspecting snapshot: {e}");
                    Ok(1)
                }
            }
        }
    }
}
