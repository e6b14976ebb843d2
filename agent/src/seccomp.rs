//! The seccomp filter every service container runs under.
//!
//! Services run code written by users, and users are not trusted: a
//! container is only as strong as the kernel interface it can reach. Most of
//! the container escapes and privilege escalations of recent years went
//! through a handful of kernel surfaces that ordinary services never need:
//! creating user namespaces (which hand an unprivileged process a full set of
//! capabilities over freshly made kernel objects), mounting file systems, the
//! kernel keyring, bpf, and loading modules or a new kernel. Capabilities
//! alone do not close these off (a new user namespace needs none), so they
//! are denied here by syscall.
//!
//! The allow-list is containerd's default profile (as of containerd 1.7) for
//! the capability set zoe grants, so images that run under Docker or
//! Kubernetes' `RuntimeDefault` run here too; staying with a list that
//! millions of containers exercise is safer than curating our own. Where we
//! are stricter than containerd 1.7 it is noted at the rule.
//!
//! Everything not allowed fails with EPERM, which programs already handle as
//! "not permitted here", rather than killing the process.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompOperator, LinuxSyscall,
};

/// Allowed with any arguments, on every architecture. Names the host's
/// libseccomp does not know (other architectures' variants, syscalls newer
/// than the host) are skipped by runc, so the list can be a superset.
///
/// Deliberately absent although containerd 1.7 allows them:
/// `io_uring_setup`, `io_uring_enter` and `io_uring_register`. io_uring
/// performs its operations out of reach of seccomp and has been a steady
/// source of exploitable kernel bugs; containerd 2.0 and Docker 25 dropped
/// them from their defaults for that reason.
///
/// `ptrace` is absent too: containerd allows it on kernels from 4.8 on
/// (where seccomp is re-checked after a tracer changes a syscall), but being
/// able to inspect and rewrite other processes in the container is not
/// something services need from us.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Granted by containerd only with CAP_SYS_CHROOT, which zoe's default set
/// includes (images that build or unpack things chroot into them).
const ALLOWED_WITH_DEFAULT_CAPS: &[&str] = &["chroot"];

/// Per-architecture calls the C libraries and language runtimes of that
/// architecture use for thread setup and cache maintenance.
const ALLOWED_X86_64: &[&str] = &["arch_prctl", "modify_ldt"];
const ALLOWED_AARCH64: &[&str] =
    &["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"];

/// `personality` can switch off address space randomisation and turn on
/// other legacy behaviour that makes kernel bugs easier to exploit; only the
/// values programs really use are let through: PER_LINUX, PER_LINUX32, the
/// same two with UNAME26, and 0xffffffff, which only queries.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The namespace flags of clone(2). A process that can create namespaces
/// can get capabilities in a new user namespace and reach code (mounting,
/// network configuration) that is only meant for root.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// The default seccomp profile: equivalent to containerd's default
/// allow-list for a container with zoe's default capabilities (Docker's
/// defaults without CAP_NET_RAW: no CAP_SYS_ADMIN, CAP_SYS_PTRACE,
/// CAP_SYS_BOOT, CAP_SYS_MODULE...), with the exceptions noted at
/// [`ALLOWED`].
pub fn default_profile() -> LinuxSeccomp {
    let mut names: Vec<&str> = ALLOWED.iter().chain(ALLOWED_WITH_DEFAULT_CAPS).copied().collect();
    // The list follows the architecture the agent was built for, as
    // containerd's does: a node runs images of its own architecture (plus
    // that architecture's 32-bit compat modes, listed below).
    let arches = if cfg!(target_arch = "x86_64") {
        names.extend(ALLOWED_X86_64);
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        names.extend(ALLOWED_AARCH64);
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        Vec::new()
    };

    let mut rules = vec![allow(&names, None)];
    rules.extend(
        PERSONALITIES.iter().map(|&p| allow(&["personality"], Some(arg(0, p, None, LinuxSeccompOperator::ScmpCmpEq)))),
    );
    // Threads and processes yes, namespaces no. (On s390 the flags are the
    // second argument; zoe does not build for s390.)
    let no_namespaces = arg(0, CLONE_NAMESPACE_FLAGS, Some(0), LinuxSeccompOperator::ScmpCmpMaskedEq);
    rules.push(allow(&["clone"], Some(no_namespaces)));
    // clone3 passes its flags in memory, where seccomp cannot look, so it
    // cannot get clone's filter. ENOSYS rather than EPERM makes glibc and
    // other runtimes fall back to clone instead of failing thread creation.
    let mut clone3 = LinuxSyscall::default();
    clone3.set_names(vec!["clone3".to_string()]);
    clone3.set_action(LinuxSeccompAction::ScmpActErrno);
    clone3.set_errno_ret(Some(libc::ENOSYS as u32));
    rules.push(clone3);

    let mut s = LinuxSeccomp::default();
    s.set_default_action(LinuxSeccompAction::ScmpActErrno);
    s.set_default_errno_ret(Some(libc::EPERM as u32));
    s.set_architectures((!arches.is_empty()).then_some(arches));
    s.set_syscalls(Some(rules));
    s
}

fn allow(names: &[&str], arg: Option<LinuxSeccompArg>) -> LinuxSyscall {
    let mut r = LinuxSyscall::default();
    r.set_names(names.iter().map(|n| n.to_string()).collect());
    r.set_action(LinuxSeccompAction::ScmpActAllow);
    r.set_args(arg.map(|a| vec![a]));
    r
}

fn arg(index: usize, value: u64, value_two: Option<u64>, op: LinuxSeccompOperator) -> LinuxSeccompArg {
    let mut b = LinuxSeccompArgBuilder::default().index(index).value(value).op(op);
    if let Some(v) = value_two {
        b = b.value_two(v);
    }
    b.build().expect("every field of a seccomp argument has a default")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn rules() -> Vec<LinuxSyscall> {
        default_profile().syscalls().clone().unwrap()
    }

    /// Names allowed whatever the arguments.
    fn unconditional() -> HashSet<String> {
        rules()
            .into_iter()
            .filter(|r| {
                r.action() == LinuxSeccompAction::ScmpActAllow && r.args().as_ref().is_none_or(|a| a.is_empty())
            })
            .flat_map(|r| r.names().clone())
            .collect()
    }

    /// Names allowed by any rule, with or without argument filters.
    fn allowed_at_all() -> HashSet<String> {
        rules()
            .into_iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn serializes_as_runc_expects() {
        let json = serde_json::to_string(&default_profile()).unwrap();
        assert!(json.contains(r#""defaultAction":"SCMP_ACT_ERRNO""#), "{json}");
        assert!(json.contains(r#""defaultErrnoRet":1"#), "{json}");
        assert!(json.contains(r#""action":"SCMP_ACT_ALLOW""#), "{json}");
        assert!(json.contains(r#""op":"SCMP_CMP_MASKED_EQ""#), "{json}");
        assert!(json.contains(r#""errnoRet":38"#), "{json}");
        if cfg!(target_arch = "x86_64") {
            assert!(json.contains(r#""architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"]"#), "{json}");
        }
        let back: LinuxSeccomp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, default_profile());
    }

    #[test]
    fn allows_what_ordinary_programs_need() {
        let allowed = unconditional();
        for name in ["read", "write", "execve", "futex", "openat", "mmap", "exit_group", "socket", "epoll_wait"] {
            assert!(allowed.contains(name), "{name} should be allowed");
        }
        assert!(allowed_at_all().contains("clone"));
        assert!(allowed_at_all().contains("personality"));
        if cfg!(target_arch = "x86_64") {
            assert!(allowed.contains("arch_prctl"));
        }
    }

    #[test]
    fn denies_namespaces_mounts_keyring_bpf_and_modules() {
        let allowed = allowed_at_all();
        for name in [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "fsopen",
            "open_tree",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "kexec_file_load",
            "ptrace",
            "reboot",
            "io_uring_setup",
            "perf_event_open",
            "userfaultfd",
        ] {
            assert!(!allowed.contains(name), "{name} must not be allowed");
        }
    }

    #[test]
    fn clone_cannot_create_namespaces() {
        let clones: Vec<_> = rules().into_iter().filter(|r| r.names().iter().any(|n| n == "clone")).collect();
        assert_eq!(clones.len(), 1, "exactly one clone rule");
        let args = clones[0].args().clone().expect("clone rule filters its flags");
        assert_eq!(args.len(), 1);
        let a = args[0];
        assert_eq!(a.index(), 0);
        assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(a.value_two(), Some(0), "allowed only if no namespace flag is set");
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_ne!(a.value() & flag as u64, 0, "mask lacks {flag:#x}");
        }
        // Ordinary thread creation must pass the filter.
        let thread_flags =
            (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
        assert_eq!(thread_flags & a.value(), 0);
    }

    #[test]
    fn clone3_falls_back_with_enosys() {
        let r = rules().into_iter().find(|r| r.names().iter().any(|n| n == "clone3")).unwrap();
        assert_eq!(r.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(r.errno_ret(), Some(libc::ENOSYS as u32));
    }

    #[test]
    fn personality_only_harmless_values() {
        let values: Vec<u64> = rules()
            .into_iter()
            .filter(|r| r.names().iter().any(|n| n == "personality"))
            .map(|r| {
                let args = r.args().clone().unwrap();
                assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpEq);
                args[0].value()
            })
            .collect();
        assert_eq!(values, PERSONALITIES);
    }

    #[test]
    fn no_name_listed_twice() {
        let rule = &rules()[0];
        let unique: HashSet<_> = rule.names().iter().collect();
        assert_eq!(unique.len(), rule.names().len());
    }
}
