//! `cairn`: one binary for the agent and the CLI.

fn main() {
    std::process::exit(cairn::cli::main(std::env::args().collect()));
}
