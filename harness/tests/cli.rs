//! The Kafka command-line workflows as a user runs them: `corelog topics`, `groups`,
//! `produce` and `consume` as processes against a `corelog broker` process, each
//! checked by its output and exit status.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::{spawn_dying_with_parent, wait_until, wait_with_timeout, BrokerOptions, BrokerProcess, Watchdog};

/// The longest any one command may take; each test's whole bound is [`TEST_BOUND`].
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const TEST_BOUND: Duration = Duration::from_secs(120);

/// A finished `corelog` command.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    /// Panics with the whole output unless the command exited 0.
    fn succeeded(self, what: &str) -> Finished {
        assert!(
            self.status.success(),
            "{what}: exit {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Starts `corelog ARGS --bootstrap BROKER` with `stdin` written to it; a
/// `--timeout-ms` of 10 s unless `args` has one.
fn spawn(bootstrap: &str, args: &[&str], stdin: &str) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_corelog"));
    command.args(args).args(["--bootstrap", bootstrap]);
    if !args.contains(&"--timeout-ms") {
        command.args(["--timeout-ms", "10000"]);
    }
    command.env("NO_COLOR", "1").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn_dying_with_parent(&mut command).expect("spawning corelog");
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin.as_bytes()).expect("writing stdin");
    drop(input);
    child
}

/// Waits for a child of [`spawn`] (killing it after [`COMMAND_TIMEOUT`]) and collects its output.
/// Its stdout is empty if the test took the pipe to read as the command runs.
fn finish(mut child: Child, args: &[&str]) -> Finished {
    let stdout = child.stdout.take();
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stdout) = stdout {
            let _ = stdout.read_to_string(&mut text);
        }
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let Some(status) = wait_with_timeout(&mut child, COMMAND_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("corelog {args:?} still running after {COMMAND_TIMEOUT:?}\nstderr:\n{}", err.join().unwrap_or_default());
    };
    Finished { status, stdout: out.join().expect("stdout reader"), stderr: err.join().expect("stderr reader") }
}

fn corelog(bootstrap: &str, args: &[&str], stdin: &str) -> Finished {
    finish(spawn(bootstrap, args, stdin), args)
}

/// `--help` of a command, run without a broker.
fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_corelog")).args(args).arg("--help").output().expect("corelog --help");
    assert!(output.status.success(), "{args:?} --help: {}", output.status);
    String::from_utf8(output.stdout).expect("utf-8 help")
}

/// The whitespace-separated cells of the `groups describe` row of `topic`/`partition`.
fn describe_row(describe: &str, topic: &str, partition: i32) -> Vec<String> {
    describe
        .lines()
        .map(|line| line.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.len() >= 6 && cells[1] == topic && cells[2] == partition.to_string())
        .unwrap_or_else(|| panic!("no row for {topic}/{partition} in:\n{describe}"))
}

#[test]
fn a_topic_is_created_listed_described_altered_and_deleted_from_the_command_line() {
    let _watchdog = Watchdog::new("topics", TEST_BOUND);
    let broker = BrokerProcess::start(BrokerOptions::new("cli-topics"));
    let bootstrap = broker.bootstrap();
    let created = corelog(
        &bootstrap,
        &[
            "topics",
            "create",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=86400000",
        ],
        "",
    )
    .succeeded("topics create");
    assert_eq!(created.stdout, "Created topic orders.\n");
    let again = corelog(&bootstrap, &["topics", "create", "orders", "--partitions", "3"], "");
    assert_eq!(again.status.code(), Some(1), "creating it twice fails: {}", again.stderr);
    assert_eq!(again.stderr, "corelog: error: creating topic orders: Broker: Topic already exists\n");

    let listed = corelog(&bootstrap, &["topics", "list"], "").succeeded("topics list");
    assert!(listed.stdout.lines().any(|line| line == "orders"), "{}", listed.stdout);

    corelog(&bootstrap, &["produce", "orders", "--partition", "1"], "a\nb\n").succeeded("produce");
    let described = corelog(&bootstrap, &["topics", "describe", "orders"], "").succeeded("topics describe");
    let lines: Vec<&str> = described.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "a topic line and three partition lines:\n{}", described.stdout);
    assert!(
        lines[0].starts_with("Topic: orders\tPartitionCount: 3\tReplicationFactor: 1\tConfigs: ")
            && lines[0].contains("retention.ms=86400000"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[2], "\tTopic: orders\tPartition: 1\tLeader: 0\tReplicas: 0\tIsr: 0\tEarliest: 0\tLatest: 2");
    assert!(lines[1].ends_with("Earliest: 0\tLatest: 0"), "{}", lines[1]);

    corelog(&bootstrap, &["topics", "alter", "orders", "--config", "segment.ms=3600000"], "").succeeded("topics alter");
    let altered = corelog(&bootstrap, &["topics", "describe", "orders"], "").succeeded("describe after alter");
    let first = altered.stdout.lines().next().unwrap_or_default();
    assert!(
        first.contains("segment.ms=3600000") && first.contains("retention.ms=86400000"),
        "the new key is set and the old one kept: {first}"
    );

    let deleted = corelog(&bootstrap, &["topics", "delete", "orders"], "").succeeded("topics delete");
    assert_eq!(deleted.stdout, "Deleted topic orders.\n");
    wait_until("orders to leave the topic list", Duration::from_secs(10), || {
        !corelog(&bootstrap, &["topics", "list"], "").stdout.lines().any(|line| line == "orders")
    });
    let gone = corelog(&bootstrap, &["topics", "describe", "orders"], "");
    assert_eq!(gone.status.code(), Some(1));
    assert_eq!(gone.stderr.trim_end(), "corelog: error: topic orders does not exist");
}

#[test]
fn produced_lines_with_keys_and_headers_consume_back_through_a_format_string() {
    let _watchdog = Watchdog::new("produce-consume", TEST_BOUND);
    let broker = BrokerProcess::start(BrokerOptions::new("cli-produce-consume"));
    let bootstrap = broker.bootstrap();
    corelog(&bootstrap, &["topics", "create", "events", "--partitions", "1"], "").succeeded("topics create");
    corelog(
        &bootstrap,
        &[
            "produce",
            "events",
            "--key-separator",
            ":",
            "--header",
            "source=cli",
            "--header",
            "v=2",
            "--acks",
            "all",
            "--idempotence",
        ],
        "user-1:login\nuser-2:buy:book\nuser-1:logout\n",
    )
    .succeeded("produce");

    let consumed = corelog(
        &bootstrap,
        &["consume", "events", "--from-beginning", "--exit-at-end", "--format", "%k=%v@%p/%o [%h]\\n"],
        "",
    )
    .succeeded("consume");
    assert_eq!(
        consumed.stdout,
        "user-1=login@0/0 [source=cli,v=2]\nuser-2=buy:book@0/1 [source=cli,v=2]\nuser-1=logout@0/2 [source=cli,v=2]\n"
    );
    let values = corelog(&bootstrap, &["consume", "events", "--offset", "1", "--partition", "0", "--exit-at-end"], "")
        .succeeded("consume --offset");
    assert_eq!(values.stdout, "buy:book\nlogout\n", "one value a line by default, from offset 1");
    let later = corelog(&bootstrap, &["consume", "events", "--from-time", "2999-01-01T00:00:00Z", "--exit-at-end"], "")
        .succeeded("consume --from-time");
    assert_eq!(later.stdout, "", "no record is from the future");
    let timestamps =
        corelog(&bootstrap, &["consume", "events", "--from-beginning", "--exit-at-end", "--format", "%T\\n"], "")
            .succeeded("consume %T");
    let first_ms: i64 = timestamps.stdout.lines().next().and_then(|t| t.parse().ok()).expect("a timestamp");
    let from_first =
        corelog(&bootstrap, &["consume", "events", "--from-time", &first_ms.to_string(), "--exit-at-end"], "")
            .succeeded("consume --from-time first");
    assert_eq!(from_first.stdout, "login\nbuy:book\nlogout\n");

    let bad = corelog(&bootstrap, &["produce", "events", "--key-separator", ":"], "k:v\nno separator\n");
    assert_eq!(bad.status.code(), Some(1));
    assert!(bad.stderr.contains("line 2: no key separator"), "{}", bad.stderr);
}

#[test]
fn a_group_shows_its_lag_and_reset_offsets_changes_it_only_with_execute() {
    let _watchdog = Watchdog::new("groups", TEST_BOUND);
    let broker = BrokerProcess::start(BrokerOptions::new("cli-groups"));
    let bootstrap = broker.bootstrap();
    corelog(&bootstrap, &["topics", "create", "orders", "--partitions", "2"], "").succeeded("topics create");
    let lines: String = (0..10).map(|i| format!("order-{i}\n")).collect();
    corelog(&bootstrap, &["produce", "orders", "--partition", "0"], &lines).succeeded("produce");

    let part = corelog(
        &bootstrap,
        &["consume", "orders", "--group", "billing", "--from-beginning", "--max-messages", "4"],
        "",
    )
    .succeeded("consume part");
    assert_eq!(part.stdout, "order-0\norder-1\norder-2\norder-3\n");
    let listed = corelog(&bootstrap, &["groups", "list"], "").succeeded("groups list");
    assert!(listed.stdout.lines().any(|line| line == "billing"), "{}", listed.stdout);
    let described = corelog(&bootstrap, &["groups", "describe", "billing"], "").succeeded("groups describe");
    let heading =
        ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"];
    assert!(described.stdout.lines().any(|line| line.split_whitespace().eq(heading)), "{}", described.stdout);
    assert_eq!(describe_row(&described.stdout, "orders", 0)[..6], ["billing", "orders", "0", "4", "10", "6"]);
    // Partition 1 is empty and the group committed nothing there; it is still shown.
    assert_eq!(describe_row(&described.stdout, "orders", 1)[..6], ["billing", "orders", "1", "-", "0", "-"]);

    let plan = corelog(&bootstrap, &["groups", "reset-offsets", "billing", "--topic", "orders", "--to-earliest"], "")
        .succeeded("reset dry run");
    assert!(
        plan.stdout.lines().any(|line| line.split_whitespace().eq(["billing", "orders", "0", "0"])),
        "{}",
        plan.stdout
    );
    assert!(plan.stderr.contains("Dry run"), "{}", plan.stderr);
    let unchanged = corelog(&bootstrap, &["groups", "describe", "billing"], "").succeeded("describe after dry run");
    assert_eq!(describe_row(&unchanged.stdout, "orders", 0)[3], "4", "a dry run changes nothing");
    let future = corelog(
        &bootstrap,
        &["groups", "reset-offsets", "billing", "--topic", "orders:0", "--to-datetime", "2999-01-01T00:00:00Z"],
        "",
    )
    .succeeded("reset to a time");
    let plan: Vec<&str> = future.stdout.lines().skip(1).collect();
    assert_eq!(plan.len(), 1, "only partition 0:\n{}", future.stdout);
    assert!(
        plan[0].split_whitespace().eq(["billing", "orders", "0", "10"]),
        "no record that late: the end\n{}",
        future.stdout
    );

    corelog(
        &bootstrap,
        &["groups", "reset-offsets", "billing", "--topic", "orders", "--to-offset", "7", "--execute"],
        "",
    )
    .succeeded("reset --execute");
    let moved = corelog(&bootstrap, &["groups", "describe", "billing"], "").succeeded("describe after reset");
    assert_eq!(describe_row(&moved.stdout, "orders", 0)[3..6], ["7", "10", "3"]);
    assert_eq!(
        describe_row(&moved.stdout, "orders", 1)[3..6],
        ["0", "0", "0"],
        "offset 7 moved into the empty partition's range"
    );

    // A live member: the reset is refused, and describe names the member.
    let mut live = spawn(&bootstrap, &["consume", "orders", "--group", "billing"], "");
    let (line_tx, printed) = std::sync::mpsc::channel::<String>();
    let live_stdout = live.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(live_stdout).lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_until("the live consumer to join billing", Duration::from_secs(20), || {
        corelog(&bootstrap, &["groups", "describe", "billing"], "").stdout.contains("with 1 member.")
    });
    let refused = corelog(
        &bootstrap,
        &["groups", "reset-offsets", "billing", "--topic", "orders", "--to-latest", "--execute"],
        "",
    );
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stdout);
    assert!(refused.stderr.contains("can only be reset if the group 'billing' is inactive"), "{}", refused.stderr);
    let busy = corelog(&bootstrap, &["groups", "describe", "billing"], "").succeeded("describe with a member");
    // The member's id, host (corelog's JoinGroup does not record the host yet: "-")
    // and client id.
    let row = describe_row(&busy.stdout, "orders", 0);
    assert!(row[6].starts_with("corelog-cli-") && row[8] == "corelog-cli", "{}", busy.stdout);
    let read: Vec<String> = (0..3)
        .map(|_| printed.recv_timeout(COMMAND_TIMEOUT).expect("the live consumer prints three records"))
        .collect();
    assert_eq!(read, ["order-7", "order-8", "order-9"], "it read from the reset offset");
    // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
    assert_eq!(unsafe { libc::kill(live.id() as libc::pid_t, libc::SIGTERM) }, 0);
    finish(live, &["consume (live)"]).succeeded("live consumer on SIGTERM");

    wait_until("billing to be empty", Duration::from_secs(20), || {
        corelog(&bootstrap, &["groups", "describe", "billing"], "").stdout.contains("with 0 members.")
    });
    let caught_up = corelog(&bootstrap, &["consume", "orders", "--group", "billing", "--exit-at-end"], "")
        .succeeded("a group consumer with --exit-at-end");
    assert_eq!(caught_up.stdout, "", "the live consumer committed what it printed when it was stopped");
    wait_until("billing to be empty again", Duration::from_secs(20), || {
        corelog(&bootstrap, &["groups", "describe", "billing"], "").stdout.contains("with 0 members.")
    });
    corelog(&bootstrap, &["groups", "delete", "billing"], "").succeeded("groups delete");
    let gone = corelog(&bootstrap, &["groups", "describe", "billing"], "");
    assert_eq!(gone.status.code(), Some(1));
    assert_eq!(gone.stderr.trim_end(), "corelog: error: consumer group 'billing' does not exist");
}

#[test]
fn an_unknown_topic_and_a_broker_that_is_down_are_said_once_with_exit_1() {
    let _watchdog = Watchdog::new("errors", TEST_BOUND);
    let broker = BrokerProcess::start(BrokerOptions::new("cli-errors"));
    let bootstrap = broker.bootstrap();
    let unknown = corelog(&bootstrap, &["consume", "nowhere", "--from-beginning", "--exit-at-end"], "");
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(unknown.stderr.trim_end(), "corelog: error: topic nowhere does not exist");
    let listed = corelog(&bootstrap, &["topics", "list"], "").succeeded("topics list");
    assert!(!listed.stdout.contains("nowhere"), "looking a topic up does not create it: {}", listed.stdout);
    drop(broker);

    // Nothing listens on the port of the broker that was just stopped.
    for args in [&["topics", "list"][..], &["groups", "list"], &["consume", "orders"]] {
        let mut all = args.to_vec();
        all.extend(["--timeout-ms", "1500"]);
        let down = corelog(&bootstrap, &all, "");
        assert_eq!(down.status.code(), Some(1), "{args:?}");
        let expected = format!("corelog: error: no answer from the cluster at {bootstrap} within 1500 ms: ");
        assert!(down.stderr.starts_with(&expected) && down.stderr.lines().count() == 1, "{args:?}: {}", down.stderr);
        // The reason said once: librdkafka's words, not also its code's name.
        let reason = &down.stderr[expected.len()..];
        assert!(reason.starts_with("Local: ") && !reason.contains('('), "{args:?}: {}", down.stderr);
    }
    let down = corelog(&bootstrap, &["produce", "orders", "--timeout-ms", "1500"], "a\n");
    assert_eq!(down.status.code(), Some(1));
    assert_eq!(
        down.stderr,
        "corelog: error: 1 of 1 records were not acknowledged by orders; the first: Local: Message timed out\n"
    );

    let usage = corelog(&bootstrap, &["consume", "orders", "--offset", "3"], "");
    assert_eq!(usage.status.code(), Some(2), "--offset without --partition is a usage error: {}", usage.stderr);
}

#[test]
fn help_shows_each_flags_default() {
    let consume = help(&["consume"]);
    assert!(consume.contains("[default: 127.0.0.1:9092]") && consume.contains("[default: %v\\n]"), "{consume}");
    assert!(help(&["produce"]).contains("[default: all]"));
    assert!(help(&["topics", "create"]).contains("[default: 30000]"));
}
