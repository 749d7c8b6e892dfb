/**
 * Starts task processes through a small helper process instead of forking the worker itself.
 *
 * Why: fork() copies the page tables of the process that calls it, and Node's
 * child_process.spawn forks the whole worker (~80 MiB of anonymous memory once the Azure SDK is
 * loaded) on its event loop. Measured here: ~2 ms of CPU per spawn, most of it in the kernel, with
 * the event loop blocked meanwhile; a bare Node process forks in ~0.9 ms, a Perl process of
 * ~5 MiB in a tenth of that (docs/benchmarks.md, local execution). For short tasks the fork was
 * the worker's largest cost, and it capped one worker at a few hundred tasks a second however
 * many cores its VM had.
 *
 * The helper is Perl because perl-base is part of every Debian and Ubuntu image (it is
 * "Essential"), and it uses only modules perl-base carries (POSIX, Fcntl, IO::Select). Its source
 * is here, run with `perl -e`, so the worker stays one file. Where Perl is missing, or the helper
 * dies, the worker spawns in-process as before (executor.ts): the helper is an accelerator,
 * never a requirement.
 *
 * What it does per task: make the attempt's dirs and remove a stale output file (plain system
 * calls here; in the worker each is a thread-pool round trip), make stdout and stderr pipes, fork,
 * and in the child setsid (the task leads a new process group, as `detached` did), chdir, point
 * stdin at /dev/null and stdout/stderr at the pipes, set the environment, and exec. An exec or
 * chdir failure comes back over a close-on-exec pipe (libuv does the same). It copies what the
 * task prints into the log files (opened on the first byte) and keeps the tails; when the task
 * exits it kills what is left of its group, waits for the pipes to close (2-3 s at most), and
 * reports the exit with the tails. Real pipes, not the socket pairs Node's spawn makes: a task
 * may `echo oops > /dev/stderr`, which a socket refuses (ENXIO).
 *
 * The wire, over the helper's stdin and stdout:
 *   request:  "<n>\0" then n fields, each ending in "\0": id, scratch dir, output file, cwd,
 *             stdout log, stderr log, file, argc, argv[0..argc-1], then "NAME=value" environment
 *             entries. (No field may hold a NUL; exec could not take one either, so such a task
 *             never reaches the helper.)
 *   replies:  "R" once ready; "S <id> <pid>" started; "F <id> <errno> <stage>" not started
 *             (stage: chdir, exec, fork, pipe); "P <id> <errno>" the attempt's files could not
 *             be made; "X <id> <wait status> <0|1: an output file is there> <stdout tail>
 *             <stderr tail>" exited, the tails in hex ("-" for none).
 * The helper exits when its stdin closes (the worker is gone): running tasks keep running, as
 * they would after a crash of a worker that forked them itself, and the next worker start reaps
 * them (daemon.ts, reapOrphans).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import { createInterface } from 'node:readline';
import type { Logger } from 'pino';

const HELPER_SOURCE = String.raw`
use strict;
use warnings;
use POSIX ();
use Errno qw(EAGAIN EEXIST EINTR ENOENT);
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK O_NOFOLLOW O_WRONLY O_CREAT O_TRUNC);
use IO::Select;

# The last bytes of each stream a result carries (MAX_TAIL_BYTES), and how long after a task's
# exit its pipes may stay open (a descendant that left its group holds them): 2-3 s, in the
# whole seconds that perl-base's time() gives.
my $TAIL = 65536;
my $GRACE = 3;

$| = 1;
# Signals meant for the worker (a terminal's Ctrl-C, a kill of the group) are its to handle: the
# helper goes when its stdin closes. A child resets these before exec (ignored stays ignored).
$SIG{$_} = 'IGNORE' for qw(INT TERM HUP QUIT PIPE);
pipe(my $wake_r, my $wake_w) or die "pipe: $!";
fcntl($wake_w, F_SETFL, fcntl($wake_w, F_GETFL, 0) | O_NONBLOCK);
$SIG{CHLD} = sub { syswrite($wake_w, 'x') };

my $sel = IO::Select->new(\*STDIN, $wake_r);
my %tasks;    # id => { pid, status, reaped, output, streams => [stdout, stderr] }
my %by_pid;   # pid => id
my %by_fd;    # fileno of a pipe => [id, 0 (stdout) or 1 (stderr)]
my %reaped;   # ids of tasks that exited and are not reported yet (report() looks at these only)
my $buf = '';
print "R\n";

# A read that SIGCHLD interrupts (another task's exit) is retried: taken for EOF, it made a failed
# exec look started.
sub read_more {
  my ($fh, $len) = @_;
  while (1) {
    my $n = sysread($fh, $_[2], $len, length $_[2]);
    return $n if defined $n || $! != EINTR;
  }
}

sub write_all {
  my ($fh, $data) = @_;
  my $off = 0;
  while ($off < length $data) {
    my $n = syswrite($fh, $data, length($data) - $off, $off);
    if (!defined $n) {
      next if $! == EINTR;
      return 0;
    }
    $off += $n;
  }
  return 1;
}

# mkdir -p: true when the directory is there (or something by its name: the open or chdir that
# follows then says what is wrong).
sub make_dir {
  my ($dir) = @_;
  return 1 if mkdir($dir) || $! == EEXIST;
  return 0 if $! != ENOENT;
  my ($parent) = $dir =~ m{^(.+)/[^/]+/*$} or return 0;
  return make_dir($parent) && (mkdir($dir) || $! == EEXIST);
}

sub parent_of { my ($p) = @_; $p =~ s{/[^/]*$}{}; return $p }

sub take {
  my $p = index($buf, "\0");
  return undef if $p < 0;
  my $count = substr($buf, 0, $p);
  my @f;
  my $pos = $p + 1;
  for (1 .. $count) {
    my $q = index($buf, "\0", $pos);
    return undef if $q < 0;
    push @f, substr($buf, $pos, $q - $pos);
    $pos = $q + 1;
  }
  substr($buf, 0, $pos) = '';
  return \@f;
}

sub start {
  my ($id, $scratch, $outputp, $cwd, $outp, $errp, $file, $argc, @rest) = @_;
  my @argv = splice(@rest, 0, $argc);
  # The attempt's files: its scratch dir, the dirs of its logs and output (made per task: an
  # operator may clean the work dir), and no stale output file. On a failure the worker makes
  # them itself (it tells a broken work dir from a task's fault).
  for my $dir ($scratch, parent_of($outputp), parent_of($outp)) {
    return print('P ', $id, ' ', $! + 0, "\n") if !make_dir($dir);
  }
  return print('P ', $id, ' ', $! + 0, "\n") if !unlink($outputp) && $! != ENOENT;
  # Real pipes, as a shell gives: a task may reopen /dev/stdout or /dev/stderr.
  my @pipes;
  for (1 .. 3) {
    pipe(my $r, my $w) or return print('F ', $id, ' ', $! + 0, " pipe\n");
    push @pipes, [$r, $w];
  }
  my ($out, $err, $exe) = @pipes;
  my $pid = fork();
  return print('F ', $id, ' ', $! + 0, " fork\n") if !defined $pid;
  if ($pid == 0) {
    $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP QUIT PIPE CHLD);
    POSIX::setsid();
    my $stage = 'chdir';
    if (chdir $cwd) {
      $stage = 'exec';
      open(STDIN, '<', '/dev/null');
      POSIX::dup2(fileno($out->[1]), 1);
      POSIX::dup2(fileno($err->[1]), 2);
      %ENV = ();
      for my $kv (@rest) {
        my $eq = index($kv, '=');
        $ENV{substr($kv, 0, $eq)} = substr($kv, $eq + 1) if $eq > 0;
      }
      exec { $file } @argv;
    }
    # Perl sets close-on-exec on every descriptor above 2: EOF at exec, or this message first.
    syswrite($exe->[1], $stage . ' ' . ($! + 0));
    POSIX::_exit(127);
  }
  close $_->[1] for @pipes;
  my $msg = '';
  1 while read_more($exe->[0], 256, $msg);
  close $exe->[0];
  if ($msg ne '') {
    close $_->[0] for $out, $err;
    1 while waitpid($pid, 0) < 0 && $! == EINTR;
    my ($stage, $e) = split / /, $msg;
    return print("F $id $e $stage\n");
  }
  my @streams;
  for my $i (0, 1) {
    my $r = ($out, $err)[$i]->[0];
    push @streams, { fh => $r, path => ($outp, $errp)[$i], log => undef, broken => 0, tail => '' };
    $by_fd{fileno $r} = [$id, $i];
    $sel->add($r);
  }
  $tasks{$id} = { pid => $pid, status => undef, reaped => 0, output => $outputp, streams => \@streams };
  $by_pid{$pid} = $id;
  print "S $id $pid\n";
}

sub close_stream {
  my ($s) = @_;
  return if !$s->{fh};
  delete $by_fd{fileno $s->{fh}};
  $sel->remove($s->{fh});
  close $s->{fh};
  $s->{fh} = undef;
  close $s->{log} if $s->{log};
  $s->{log} = undef;
}

# Copies what a task printed into its log, opened on the first byte (a stream that printed
# nothing leaves no file), and keeps the last $TAIL bytes for the result. A log that cannot be
# written loses the full log, never the task or its tail.
sub relay {
  my ($fh) = @_;
  my ($id, $i) = @{$by_fd{fileno $fh}};
  my $s = $tasks{$id}{streams}[$i];
  my $data = '';
  my $n = read_more($fh, 65536, $data);
  return close_stream($s) if !$n;
  if (!$s->{broken}) {
    # A regular file only, opened without blocking: a task can put a FIFO (or a symlink) at its
    # own log's path, and a blocking open of a FIFO nobody reads froze the helper, and with it
    # every task of the worker.
    if (!$s->{log} && !(sysopen($s->{log}, $s->{path}, O_WRONLY | O_CREAT | O_TRUNC | O_NONBLOCK | O_NOFOLLOW, 0666) && -f $s->{log})) {
      close $s->{log} if $s->{log};
      $s->{log} = undef;
      $s->{broken} = 1;
    } elsif (!write_all($s->{log}, $data)) {
      $s->{broken} = 1;
      close $s->{log};
      $s->{log} = undef;
    }
  }
  $s->{tail} .= $data;
  substr($s->{tail}, 0, length($s->{tail}) - $TAIL) = '' if length $s->{tail} > $TAIL;
}

sub reap {
  while ((my $pid = waitpid(-1, POSIX::WNOHANG())) > 0) {
    my $id = delete $by_pid{$pid};
    next if !defined $id;
    $tasks{$id}{status} = $?;
    $tasks{$id}{reaped} = time;
    $reaped{$id} = 1;
    # Anything the task left running in its group goes with it (as the worker does in-process),
    # so its pipes close now rather than at the grace's end.
    kill 'KILL', -$pid;
  }
}

# Reports each reaped task once its pipes are closed, or its grace has passed: status, whether it
# left an output file (lstat: a FIFO must not be opened here), and the two tails in hex.
sub report {
  my $now = time;
  for my $id (keys %reaped) {
    my $t = $tasks{$id};
    my @open = grep { $_->{fh} } @{$t->{streams}};
    next if @open && $now - $t->{reaped} < $GRACE;
    close_stream($_) for @open;
    my $output = (lstat($t->{output}) || $! != ENOENT) ? 1 : 0;
    my @tails = map { length $_->{tail} ? unpack('H*', $_->{tail}) : '-' } @{$t->{streams}};
    print "X $id $t->{status} $output $tails[0] $tails[1]\n";
    delete $tasks{$id};
    delete $reaped{$id};
  }
}

while (1) {
  # The timeout backs up SIGCHLD (one that lands just before select blocks waits for it) and
  # times the grace of a task whose pipes stay open.
  for my $fh ($sel->can_read(0.5)) {
    if ($fh == $wake_r) {
      sysread($wake_r, my $junk, 4096);
    } elsif ($fh == \*STDIN) {
      my $n = read_more(\*STDIN, 65536, $buf);
      exit 0 if !$n;
      while (my $req = take()) {
        start(@$req);
      }
    } else {
      relay($fh);
    }
  }
  reap();
  report();
}
`;

/** What a launch came to. */
export type Launch =
  | { kind: 'started'; pid: number; exit: Promise<HelperExit> }
  /** The task could not start: `errno` names the error (ENOENT...), `stage` what failed. */
  | { kind: 'failed'; errno: string; stage: string }
  /**
   * Not started: the attempt's files could not be made, or a field holds a NUL (the wire's
   * separator; exec could not take one either). The caller starts the task another way.
   */
  | { kind: 'declined' }
  /** The helper was gone before the request went out: the caller starts the task another way. */
  | { kind: 'lost' }
  /**
   * The helper died after the request went out: whether the task started is unknown (and if it
   * did, nobody can see it end). The caller must not start it again; it gives it back.
   */
  | { kind: 'vanished' };

export type HelperExit =
  | { kind: 'exited'; code: number | null; signal: NodeJS.Signals | null; outputFile: boolean; stdoutTail: Buffer; stderrTail: Buffer }
  /** The helper died while the task ran: its exit will never be known. */
  | { kind: 'lost' };

export interface LaunchRequest {
  file: string;
  args: readonly string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** Made before the start (with its parents), as are the dirs of the logs and the output. */
  scratch: string;
  /** Removed before the start, if a previous run left it; checked for after the exit. */
  output: string;
  stdoutLog: string;
  stderrLog: string;
}

/** Number to name, the first name where two share a number (SIGABRT, not SIGIOT: as Node names them). */
function byNumber<T extends string>(table: Record<string, number>): Map<number, T> {
  const out = new Map<number, T>();
  for (const [name, n] of Object.entries(table)) if (!out.has(n)) out.set(n, name as T);
  return out;
}
const ERRNO_NAMES = byNumber<string>(constants.errno);
const SIGNAL_NAMES = byNumber<NodeJS.Signals>(constants.signals);
const errnoName = (n: string): string => ERRNO_NAMES.get(Number(n)) ?? `errno ${n}`;

/** How long the helper may take to say it is ready before the worker does without it. */
const READY_TIMEOUT_MS = 10_000;

export class SpawnHelper {
  private nextId = 1;
  private readonly starting = new Map<string, (l: Launch) => void>();
  private readonly running = new Map<string, (e: HelperExit) => void>();
  private lostReason: string | null = null;
  private closed = false;
  private stdinBroken = false;

  private constructor(
    private readonly proc: ChildProcess,
    private readonly log: Logger,
  ) {}

  /**
   * Starts the helper and waits for it to say it is ready. Null when it cannot run (no perl, a
   * perl that fails), with the reason logged: the worker then spawns in-process.
   */
  static async start(log: Logger, perl = 'perl'): Promise<SpawnHelper | null> {
    let proc: ChildProcess;
    try {
      // detached: its own session, so a terminal's signals for the worker's group miss it. Its
      // own environment: PATH only (PERL5LIB, PERL5OPT or PERL_UNICODE from the worker's could
      // change what it runs or how it reads); tasks get theirs with each request.
      proc = spawn(perl, ['-e', HELPER_SOURCE], { stdio: ['pipe', 'pipe', 'inherit'], detached: true, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    } catch (err) {
      log.warn({ err }, 'spawn helper unavailable; tasks are forked by the worker itself');
      return null;
    }
    const lines = createInterface({ input: proc.stdout! });
    const ready = await new Promise<string | null>((resolve) => {
      const timer = setTimeout(() => resolve(`no answer within ${READY_TIMEOUT_MS} ms`), READY_TIMEOUT_MS);
      const settle = (why: string | null) => {
        clearTimeout(timer);
        resolve(why);
      };
      proc.once('error', (err: NodeJS.ErrnoException) => settle(`cannot run ${perl}: ${err.code ?? err.message}`));
      proc.once('exit', (code, signal) => settle(`${perl} exited (${signal ?? code}) before it was ready`));
      lines.once('line', (line) => settle(line === 'R' ? null : `unexpected first line ${JSON.stringify(line)}`));
    });
    if (ready !== null) {
      lines.close();
      proc.kill('SIGKILL');
      log.warn({ reason: ready }, 'spawn helper unavailable; tasks are forked by the worker itself');
      return null;
    }
    proc.removeAllListeners('error').removeAllListeners('exit');
    const helper = new SpawnHelper(proc, log);
    lines.on('line', (line) => helper.onLine(line));
    // 'close', not 'exit': it comes after the last line was read. On 'exit', a task the helper
    // had just reported started was taken for never started, and forked a second time.
    // Nor on an error: replies the helper sent before it died may still wait to be read. An
    // EPIPE on stdin used to drop them, and a finished task was killed and run again.
    proc.on('close', (code, signal) => helper.lose(`helper exited (${signal ?? code})`));
    proc.on('error', (err) => log.warn({ err }, 'spawn helper error'));
    // The helper stopped reading: later starts go the in-process way (a request written now
    // would go nowhere); those already written are answered, or given back at 'close'.
    proc.stdin!.on('error', () => (helper.stdinBroken = true));
    // An idle helper does not keep the worker's process alive; one with tasks does (ref()).
    proc.unref();
    helper.ref();
    // Info, not debug: an operator reading the journal should see which way tasks start.
    log.info({ pid: proc.pid }, 'spawn helper ready; tasks start through it');
    return helper;
  }

  /** The helper's process id. */
  get pid(): number {
    return this.proc.pid!;
  }

  /** Why the helper is gone, or null while it works. */
  get lost(): string | null {
    return this.lostReason;
  }

  /** Keeps the worker's process alive while the helper has tasks, and only then. */
  private ref(): void {
    const busy = this.starting.size + this.running.size > 0;
    const io = [this.proc.stdin, this.proc.stdout] as unknown as Array<{ ref(): void; unref(): void }>;
    for (const s of io) {
      if (busy) s.ref();
      else s.unref();
    }
  }

  /** Asks the helper to start a task. Never rejects. */
  launch(r: LaunchRequest): Promise<Launch> {
    if (this.lostReason !== null || this.closed || this.stdinBroken) return Promise.resolve({ kind: 'lost' });
    const id = String(this.nextId++);
    const env = Object.entries(r.env).filter((e): e is [string, string] => e[1] !== undefined).map(([k, v]) => `${k}=${v}`);
    const fields = [id, r.scratch, r.output, r.cwd, r.stdoutLog, r.stderrLog, r.file, String(r.args.length + 1), r.file, ...r.args, ...env];
    if (fields.some((f) => f.includes('\0'))) return Promise.resolve({ kind: 'declined' });
    const launched = new Promise<Launch>((resolve) => this.starting.set(id, resolve));
    this.ref();
    this.proc.stdin!.write(`${fields.length}\0${fields.join('\0')}\0`);
    return launched;
  }

  /**
   * Lets the helper go (the worker is leaving): it exits when its stdin closes. Tasks still
   * running are left to run, unreported, as the worker's own forks would be when it exits; a
   * drain has waited for them, and a forced stop has already signalled them.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.proc.stdin!.end();
  }

  private onLine(line: string): void {
    const [kind, id, a, b, c, d] = line.split(' ');
    if (kind === 'S') {
      let resolveExit!: (e: HelperExit) => void;
      const exit = new Promise<HelperExit>((resolve) => (resolveExit = resolve));
      this.running.set(id!, resolveExit);
      this.settleStart(id!, { kind: 'started', pid: Number(a), exit });
    } else if (kind === 'F') {
      this.settleStart(id!, { kind: 'failed', errno: errnoName(a!), stage: b! });
    } else if (kind === 'P') {
      this.settleStart(id!, { kind: 'declined' });
    } else if (kind === 'X') {
      const resolve = this.running.get(id!);
      this.running.delete(id!);
      this.ref();
      const status = Number(a);
      // A wait status: the exit code in the second byte, or the signal in the low seven bits.
      const sig = status & 0x7f;
      const tail = (hex: string | undefined) => (hex === undefined || hex === '-' ? Buffer.alloc(0) : Buffer.from(hex, 'hex'));
      resolve?.({ kind: 'exited', code: sig === 0 ? (status >> 8) & 0xff : null, signal: sig === 0 ? null : (SIGNAL_NAMES.get(sig) ?? null), outputFile: b === '1', stdoutTail: tail(c), stderrTail: tail(d) });
    } else {
      this.log.error({ line }, 'spawn helper said something unexpected');
    }
  }

  private settleStart(id: string, l: Launch): void {
    const resolve = this.starting.get(id);
    this.starting.delete(id);
    this.ref();
    resolve?.(l);
  }

  /** The helper is gone: every launch waiting is answered lost, every running task's exit too. */
  private lose(why: string): void {
    if (this.lostReason !== null || this.closed) return;
    this.lostReason = why;
    this.log.error({ reason: why, running: this.running.size + this.starting.size }, 'spawn helper lost; its running tasks are stopped and given back, and new ones are forked by the worker itself');
    for (const resolve of this.starting.values()) resolve({ kind: 'vanished' });
    for (const resolve of this.running.values()) resolve({ kind: 'lost' });
    this.starting.clear();
    this.running.clear();
    this.ref();
  }
}
