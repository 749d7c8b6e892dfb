#!/usr/bin/perl
# A minimal fork server: the floor for a worker that starts its tasks through a small helper
# process instead of forking itself (bench/variants.ts, forkServer). It reads one id per line on
# stdin, forks and execs `true` for it with stdio on /dev/null, and writes "<id> <wait status>"
# per finished child. A child's exit wakes the loop through a self-pipe, so nothing polls.
# Perl because it is in every Debian and Ubuntu image; a helper this small forks in
# microseconds, where a Node.js process forks its whole address space.
use strict;
use warnings;
use POSIX qw(:sys_wait_h);
use IO::Handle;
use IO::Select;

STDOUT->autoflush(1);
pipe(my $wake_r, my $wake_w) or die "pipe: $!";
$wake_w->autoflush(1);
$wake_w->blocking(0);
$SIG{CHLD} = sub { syswrite($wake_w, 'x') };
my $sel = IO::Select->new(\*STDIN, $wake_r);
my %running;
my $open = 1;
my $buf = '';
while ($open || %running) {
  for my $fh ($sel->can_read) {
    if ($fh == $wake_r) {
      sysread($wake_r, my $junk, 4096);
      next;
    }
    my $n = sysread(STDIN, $buf, 65536, length $buf);
    if (!$n) {
      $open = 0;
      $sel->remove(\*STDIN);
      next;
    }
    while ($buf =~ s/^(\S+)\n//) {
      my $id = $1;
      my $pid = fork() // die "fork: $!";
      if ($pid == 0) {
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>', '/dev/null');
        open(STDERR, '>', '/dev/null');
        exec('true') or POSIX::_exit(127);
      }
      $running{$pid} = $id;
    }
  }
  while ((my $pid = waitpid(-1, WNOHANG)) > 0) {
    my $id = delete $running{$pid};
    print "$id $?\n" if defined $id;
  }
}
