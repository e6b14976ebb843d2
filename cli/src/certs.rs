//! `zoe certs`: the cluster's PKI (a CA and role certificates).

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use zoe_net::{CertificateAuthority, Identity, Role};

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Create a cluster CA: DIR/ca.pem and DIR/ca-key.pem (key mode 0600).
    Ca {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Cluster name, recorded in the CA's subject.
        #[arg(long, default_value = "zoe")]
        cluster: String,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate for a coordinator, agent or client: DIR/NAME.pem and DIR/NAME-key.pem.
    Issue {
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long)]
        ca: PathBuf,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The holder's name (a DNS label); its identity is ROLE.NAME.zoe.
        #[arg(long)]
        name: String,
        /// Extra DNS names (for operators who connect by host name).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// IP addresses to include (agents and clients may connect by address).
        #[arg(long = "ip")]
        ip: Vec<IpAddr>,
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Coordinator,
    Agent,
    Client,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Coordinator => Role::Coordinator,
            RoleArg::Agent => Role::Agent,
            RoleArg::Client => Role::Client,
        }
    }
}

fn refuse_overwrite(paths: &[PathBuf], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for p in paths {
        if p.exists() {
            bail!("{} exists; pass --force to overwrite it", p.display());
        }
    }
    Ok(())
}

fn make_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

pub fn run(cmd: CertsCommand) -> Result<ExitCode> {
    match cmd {
        CertsCommand::Ca { out, cluster, force } => {
            let files = [out.join("ca.pem"), out.join("ca-key.pem")];
            refuse_overwrite(&files, force)?;
            make_dir(&out)?;
            // A truncated file keeps its old mode: start afresh so the key is 0600.
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
            let ca = CertificateAuthority::generate(&cluster)?;
            ca.write(&out)?;
            eprintln!(
                "wrote {} and {} (keep the key offline)",
                out.join("ca.pem").display(),
                out.join("ca-key.pem").display()
            );
        }
        CertsCommand::Issue { ca, role, name, dns, ip, out, force } => {
            let read = |f: &str| {
                let p = ca.join(f);
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
            };
            let authority =
                CertificateAuthority::from_pem(&read("ca.pem")?, &read("ca-key.pem")?).context("loading the CA")?;
            let id = Identity::new(role.into(), name.clone())?;
            let files = [out.join(format!("{name}.pem")), out.join(format!("{name}-key.pem"))];
            refuse_overwrite(&files, force)?;
            make_dir(&out)?;
            let cert = authority.issue(&id, &dns, &ip)?;
            if force {
                // The key file keeps its mode when truncated; make sure it is 0600.
                for f in &files {
                    let _ = std::fs::remove_file(f);
                }
            }
            cert.write(&out, &name)?;
            eprintln!("issued {} ({}) → {}, {}", id.san(), id.role, files[0].display(), files[1].display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
