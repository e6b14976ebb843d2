//! `zoe-bench NAME`: runs one benchmark end to end, progress on stderr,
//! exactly one JSON line on stdout.

mod common;
mod e2e;
mod hollow;
mod latency;
mod protocol;
mod proxy;
mod raft;
mod runtime;
mod scheduler;
mod sim;
mod storage;
mod workflows;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "zoe-bench", about = "Runs one of zoe's benchmarks and prints one JSON line with the results.")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Container start/stop latency through the agent runtime vs `ctr run --rm`, and the runtime's memory over many runs.
    Runtime(runtime::Args),
    /// Placements per second of one pure scheduling pass on a large simulated cluster, per queue policy.
    Scheduler(scheduler::Args),
    /// Durable commit throughput/latency (1 and 64 writers) of a 3-coordinator cluster, and kill -9 failover time.
    Raft(raft::Args),
    /// Agent protocol: command round trip, hollow agents one leader keeps at a heartbeat, agent RSS idle and loaded.
    Protocol(protocol::Args),
    /// End to end at scale: 3 coordinators, hollow agents, executions submitted over the REST API until all run.
    E2e(e2e::Args),
    /// Disk and memory of 3 coordinators over 1,000,000 commands against the live state's size (compaction).
    Storage(storage::Args),
    /// Submit → running of a busybox ZApp on a real agent vs `ctr run -d` on the same containerd.
    Latency(latency::Args),
    /// The service proxy vs direct to the service: a large download and many small requests, side by side.
    Proxy(proxy::Args),
    /// zoe-sim's speed on the paper's workload (20,000 applications on 25 nodes), with its turnarounds per class.
    Sim(sim::Args),
    /// Workflows: concurrent 5-step pipeline runs on hollow agents; step end → dependants' containers spawned.
    Workflows(workflows::Args),
    /// (internal) The hollow-agent load generator `protocol` runs as a child process.
    #[command(hide = true)]
    ProtocolHollow(protocol::HollowArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = match cli.bench {
        Bench::Runtime(args) => rt.block_on(runtime::run(args))?,
        Bench::Scheduler(args) => scheduler::run(args)?,
        Bench::Raft(args) => rt.block_on(raft::run(args))?,
        Bench::Protocol(args) => rt.block_on(protocol::run(args))?,
        Bench::E2e(args) => rt.block_on(e2e::run(args))?,
        Bench::Latency(args) => rt.block_on(latency::run(args))?,
        Bench::Sim(args) => sim::run(args)?,
        Bench::Proxy(args) => rt.block_on(proxy::run(args))?,
        Bench::Storage(args) => rt.block_on(storage::run(args))?,
        Bench::Workflows(args) => rt.block_on(workflows::run(args))?,
        Bench::ProtocolHollow(args) => rt.block_on(protocol::hollow(args))?,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
