//! `quadra`: convert PyTorch QuadraNet checkpoints into `.qnet` model files or compiled-in
//! Rust model tables, inspect them, run them, and demo the bundled trained model.

mod bundled;
mod convert;
mod demo;
mod infer;
mod inspect;
mod npy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "quadra",
    version,
    about = "QuadraNet on edge CPUs: convert, inspect, infer, demo"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert a PyTorch checkpoint (safetensors) into a .qnet file and/or compiled-in Rust.
    Convert(convert::Args),
    /// Describe a .qnet file: architecture, parameters, bytes, FLOPs, arena.
    Inspect(inspect::Args),
    /// Run a .qnet model on an .npy batch or on image files.
    Infer(infer::Args),
    /// Classify the bundled handwritten-digit test set with the compiled-in int8 model.
    Demo(demo::Args),
}

fn main() -> ExitCode {
    quadra_cli::exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Convert(a) => convert::run(a),
        Cmd::Inspect(a) => inspect::run(a),
        Cmd::Infer(a) => infer::run(a),
        Cmd::Demo(a) => demo::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
