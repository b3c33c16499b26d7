//! Flags and verbs, spelled as Podman spells them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "stasis",
    version,
    about = "A daemonless container engine built around checkpoint/restore"
)]
pub struct Cli {
    /// Persistent storage root
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/stasis",
        env = "STASIS_ROOT"
    )]
    pub root: PathBuf,
    /// Runtime state directory
    #[arg(
        long,
        global = true,
        default_value = "/run/stasis",
        env = "STASIS_RUNROOT"
    )]
    pub runroot: PathBuf,
    #[command(subcommand)]
    pub command: Top,
}

#[derive(Debug, Subcommand)]
pub enum Top {
    /// Manage containers
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCmd),
    #[command(flatten)]
    Ctr(ContainerCmd),
    /// Manage volumes
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage pods
    #[command(subcommand)]
    Pod(PodCmd),
    /// List images
    Images(ImagesArgs),
    /// Remove images
    Rmi(RmiArgs),
    /// Pull an image from a registry
    Pull(PullArgs),
    /// Load an image from a docker-archive or oci-archive
    Load(LoadArgs),
    /// Import a root filesystem tarball as an image
    Import(ImportArgs),
}

#[derive(Debug, Subcommand)]
pub enum ContainerCmd {
    /// Create and start a container
    Run(RunArgs),
    /// Create a container
    Create(RunArgs),
    /// Start containers
    Start(NamesArgs),
    /// Stop containers
    Stop(StopArgs),
    /// Send a signal to containers
    Kill(KillArgs),
    /// Remove containers
    Rm(RmArgs),
    /// Wait for containers to exit and print their exit codes
    Wait(NamesArgs),
    /// List containers
    #[command(alias = "ls", alias = "list")]
    Ps(PsArgs),
    /// Show a container's configuration and state as JSON
    Inspect(InspectArgs),
    /// Show a container's output
    Logs(LogsArgs),
    /// Run a process in a running container
    Exec(ExecArgs),
    /// Checkpoint running containers (freeze them into images or an archive)
    Checkpoint(CheckpointArgs),
    /// Restore checkpointed containers, or import a checkpoint archive
    Restore(RestoreArgs),
    /// Release a stopped container's runtime resources (conmon calls this)
    #[command(hide = true)]
    Cleanup(NamesArgs),
    /// Serve a lazy restore's memory pages from its archive (the engine starts this)
    #[command(hide = true)]
    ServePages(ServePagesArgs),
}

#[derive(Debug, Args)]
pub struct ServePagesArgs {
    /// Inherited descriptor of the archive
    #[arg(long)]
    pub archive_fd: i32,
    /// Inherited descriptor of the socket to CRIU's lazy-pages daemon
    #[arg(long)]
    pub socket_fd: i32,
    /// CRIU image directory (its pagemaps)
    #[arg(long)]
    pub images: PathBuf,
    /// Where the pages are in the archive (JSON written by the engine)
    #[arg(long)]
    pub plan: PathBuf,
    /// The container's cgroup, whose processes are killed if the pages cannot be served
    #[arg(long)]
    pub kill_cgroup: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Load an image from a docker-archive or oci-archive
    Load(LoadArgs),
    /// Import a root filesystem tarball as an image
    Import(ImportArgs),
    /// Pull an image from a registry
    Pull(PullArgs),
    /// List images
    #[command(alias = "ls", alias = "list")]
    Images(ImagesArgs),
    /// Show an image's configuration as JSON
    Inspect(ImageInspectArgs),
    /// Remove images
    #[command(alias = "rmi")]
    Rm(RmiArgs),
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Name of the container
    #[arg(long)]
    pub name: Option<String>,
    /// Run in the background and print the container ID
    #[arg(short, long)]
    pub detach: bool,
    /// Set environment variables (KEY=VALUE)
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User (name|uid[:group|gid])
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Override the image's entrypoint
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Set labels (KEY=VALUE)
    #[arg(short, long = "label")]
    pub label: Vec<String>,
    #[arg(long)]
    pub stop_signal: Option<String>,
    #[arg(long)]
    pub stop_timeout: Option<u32>,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Mount a volume or host path: NAME:/dest[:ro], /host/path:/dest[:ro], or /dest
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// Network: bridge (default), none, host, or network names (comma-separated)
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// Static IPv4 address on the network
    #[arg(long)]
    pub ip: Option<String>,
    /// Static MAC address on the network
    #[arg(long)]
    pub mac_address: Option<String>,
    /// Publish a container's port: [[ip:][hostPort]:]containerPort[/protocol]
    #[arg(short, long)]
    pub publish: Vec<String>,
    /// Run the container in this pod (name or ID)
    #[arg(long)]
    pub pod: Option<String>,
    /// Keep stdin open (accepted for compatibility)
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal (not supported yet)
    #[arg(short, long)]
    pub tty: bool,
    /// Image to run
    pub image: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<u32>,
    /// Stop all running containers
    #[arg(short, long)]
    pub all: bool,
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(short, long)]
    pub all: bool,
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove running containers too (killing them)
    #[arg(short, long)]
    pub force: bool,
    /// Remove all containers
    #[arg(short, long)]
    pub all: bool,
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers, not only running ones
    #[arg(short, long)]
    pub all: bool,
    /// Print IDs only
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: table or json
    #[arg(long)]
    pub format: Option<String>,
    /// Do not truncate IDs
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    #[arg(short, long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the output until the container exits
    #[arg(short, long)]
    pub follow: bool,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    #[arg(short, long)]
    pub workdir: Option<String>,
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(short, long)]
    pub tty: bool,
    #[arg(short, long)]
    pub detach: bool,
    pub container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long)]
    pub format: Option<String>,
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove containers using the image too
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Require HTTPS and verify certificates (false: plain HTTP)
    #[arg(long, default_value = "true", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// USERNAME[:PASSWORD] for the registry
    #[arg(long)]
    pub creds: Option<String>,
    #[arg(short, long)]
    pub quiet: bool,
    pub image: String,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Archive to read
    #[arg(short, long)]
    pub input: PathBuf,
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile-style change (CMD, ENTRYPOINT, ENV, WORKDIR)
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Root filesystem tarball ("-" for stdin)
    pub file: String,
    pub reference: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImageInspectArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
}

impl CrFlags {
    /// The options passed through runc to CRIU.
    pub fn criu(&self) -> stasis_engine::runc::CriuOpts {
        stasis_engine::runc::CriuOpts {
            tcp_established: self.tcp_established,
            file_locks: self.file_locks,
            ..Default::default()
        }
    }
}

/// Flags `checkpoint` and `restore` share, with Podman's names.
#[derive(Debug, Args)]
pub struct CrFlags {
    /// Act on all containers (running ones to checkpoint, checkpointed ones to restore)
    #[arg(short, long)]
    pub all: bool,
    /// Act on the latest created container
    #[arg(short, long)]
    pub latest: bool,
    /// Keep all temporary checkpoint files
    #[arg(short, long)]
    pub keep: bool,
    /// Checkpoint/restore a container with established TCP connections
    #[arg(long)]
    pub tcp_established: bool,
    /// Checkpoint/restore a container with file locks
    #[arg(long)]
    pub file_locks: bool,
    /// Leave out root file-system changes (export and import only)
    #[arg(long)]
    pub ignore_rootfs: bool,
    /// Leave out the content of volumes (export and import only)
    #[arg(long)]
    pub ignore_volumes: bool,
    /// Display statistics
    #[arg(long)]
    pub print_stats: bool,
}

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub common: CrFlags,
    /// Export the checkpoint to a tar archive ("-" for standard output)
    #[arg(short, long)]
    pub export: Option<String>,
    /// Archive compression: none, gzip or zstd (default zstd)
    #[arg(short, long)]
    pub compress: Option<String>,
    /// Leave the container running after writing the checkpoint
    #[arg(short = 'R', long)]
    pub leave_running: bool,
    /// Dump the container's memory without stopping it (needs dirty memory tracking)
    #[arg(short = 'P', long)]
    pub pre_checkpoint: bool,
    /// Checkpoint with a previous pre-checkpoint
    #[arg(long)]
    pub with_previous: bool,
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub common: CrFlags,
    /// Restore from an exported checkpoint archive ("-" for standard input)
    #[arg(short, long)]
    pub import: Option<String>,
    /// Name of the restored container (gets a new ID too)
    #[arg(short, long)]
    pub name: Option<String>,
    /// Ignore the IP address of the checkpoint, take a new one
    #[arg(long)]
    pub ignore_static_ip: bool,
    /// Ignore the MAC address of the checkpoint, take a new one
    #[arg(long)]
    pub ignore_static_mac: bool,
    /// Publish a container's port to the host ([[ip:][hostPort]:]containerPort[/protocol])
    #[arg(short, long)]
    pub publish: Vec<String>,
    /// Restore into this pod (name or ID)
    #[arg(long)]
    pub pod: Option<String>,
    pub containers: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create a volume
    Create(VolumeCreateArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show volumes as JSON
    Inspect(NamesOnly),
    /// Remove volumes
    #[command(alias = "remove")]
    Rm(ForceNames),
    /// Remove every volume no container uses
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct NamesOnly {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ForceNames {
    /// Remove the containers using it too
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation (accepted for compatibility; prune never asks)
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a bridge network
    Create(NetworkCreateArgs),
    /// List networks
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show networks as JSON
    Inspect(NamesOnly),
    /// Remove networks
    #[command(alias = "remove")]
    Rm(ForceNames),
}

#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    /// Subnet in CIDR notation
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway address (default: the subnet's first address)
    #[arg(long)]
    pub gateway: Option<String>,
    /// No outside connectivity
    #[arg(long)]
    pub internal: bool,
    /// Disable DNS (aardvark-dns) on this network
    #[arg(long)]
    pub disable_dns: bool,
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum PodCmd {
    /// Create a pod (with an infra container holding its shared namespaces)
    Create(PodCreateArgs),
    /// Start pods
    Start(NamesOnly),
    /// Stop pods (their containers too)
    Stop(PodStopArgs),
    /// Remove pods
    Rm(PodRmArgs),
    /// List pods
    #[command(alias = "ls", alias = "list")]
    Ps(ListArgs),
    /// Show pods as JSON
    Inspect(NamesOnly),
}

#[derive(Debug, Args)]
pub struct PodCreateArgs {
    #[arg(short, long)]
    pub name: Option<String>,
    /// Namespaces to share: ipc, net, uts, pid, cgroup (default ipc,net,uts)
    #[arg(long)]
    pub share: Option<String>,
    /// Publish a port of the pod
    #[arg(short, long)]
    pub publish: Vec<String>,
    /// Network of the pod
    #[arg(long, alias = "net")]
    pub network: Option<String>,
}

#[derive(Debug, Args)]
pub struct PodStopArgs {
    #[arg(short = 't', long = "time")]
    pub time: Option<u32>,
    #[arg(short, long)]
    pub all: bool,
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PodRmArgs {
    #[arg(short, long)]
    pub force: bool,
    #[arg(short, long)]
    pub all: bool,
    pub names: Vec<String>,
}
