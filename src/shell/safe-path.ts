/**
 * Writing as root where other users can write too, without being turned against the host.
 *
 * A path like /tmp/app/app.conf names folders a local user may own: that user can plant
 * `/tmp/app -> /etc` before a run, or swap the folder for such a link while the run works, and a
 * root write that follows it lands in /etc. Resolving the path first (realpath) and writing after
 * races with the swap. So every host write, chmod, chown, delete and restore here:
 *
 * 1. enters the folder one component at a time from `/` (`hs_cd`), refusing a symbolic link that
 *    a user other than root could have planted or swapped — one not owned by root, or in a folder
 *    whose entries others can change — and checking after each step that it stands in the folder
 *    it meant to (a swap made between the look and the step is caught there): `cd -P` leaves in
 *    PWD what `pwd -P` would print, the kernel's own name of the folder it entered, without the
 *    fork a `$(pwd -P)` costs at every component of every write. Links
 *    root made in folders only root can change (Debian's /lib -> usr/lib) are followed.
 * 2. then acts on the last component by its bare name, in that folder, with operations that do not
 *    follow a link there either: rename, unlink, rmdir, mkdir, `ln -T`, `chown -h`, and for content,
 *    mode and owner a file opened with O_NOFOLLOW (perl, which every Debian has: perl-base is
 *    essential), so a file swapped for a link under our hands is refused, not written through.
 *
 * What a refusal looks like: exit 77 and one line on stderr, "hostsmith: refusing <component>:
 * <why>", which the step's error carries to the person at the terminal.
 */

import { quote } from './quote.js';

/** Quoted as one word, always (these scripts are read more than they are run). */
const q = (s: string): string => (s === '' || !/^[A-Za-z0-9_/.,:=@%+-]+$/.test(s) ? quote(s) : `'${s}'`);

/** Exit status of a script that refused a path (a planted or swapped link). */
export const REFUSED = 77;

/** Exit status of hs_cd when a folder on the way does not exist (nothing to act on). */
export const MISSING = 2;

const WRITE_PL = [
  'use strict; use Fcntl qw(O_WRONLY O_CREAT O_EXCL O_NOFOLLOW);',
  'my ($n, $m, $o) = @ARGV;',
  'sub id { my ($v, $get, $what) = @_; return $v if $v =~ /^\\d+$/; my $i = ($get->($v))[2]; defined $i or die "no $what named $v\\n"; $i }',
  // `user:` is the user's login group, as chown has it.
  'sub login { my $v = shift; my $g = $v =~ /^\\d+$/ ? (getpwuid($v))[3] : (getpwnam($v))[3]; defined $g or die "no user named $v\\n"; $g }',
  'my @s = lstat($n); my ($mode, $u, $g) = (0644, $>, $) + 0);',
  'if (@s && -f _) { ($mode, $u, $g) = ($s[2] & 07777, $s[4], $s[5]) }',
  '$mode = oct($m) if length $m;',
  'if (length $o) { my ($ou, $og) = split /:/, $o, 2; $u = id($ou, sub { getpwnam($_[0]) }, "user") if length $ou; $g = id($og, sub { getgrnam($_[0]) }, "group") if defined $og && length $og; $g = login($ou) if defined $og && !length $og && length $ou }',
  'my ($t, $fh);',
  'for (1 .. 50) { $t = sprintf(".hostsmith.%08x%08x", int(rand(4294967296)), int(rand(4294967296))); last if sysopen($fh, $t, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600); undef $fh }',
  'defined $fh or die "cannot make a temporary file beside $n: $!\\n";',
  'sub fail { unlink $t; die "$_[0]: $!\\n" }',
  'binmode STDIN; binmode $fh; my $buf;',
  'while (1) { my $r = sysread(STDIN, $buf, 65536); defined $r or fail("reading what to write to $n"); last unless $r; my $off = 0; while ($off < $r) { my $w = syswrite($fh, $buf, $r - $off, $off); defined $w or fail("writing $n"); $off += $w } }',
  'chown($u, $g, $fh) or fail("chown $n"); chmod($mode, $fh) or fail("chmod $n");',
  'close($fh) or fail("writing $n"); rename($t, $n) or fail("renaming the new $n into place");',
].join('\n');

const META_PL = [
  'use strict; use Fcntl qw(O_RDONLY O_NOFOLLOW O_NONBLOCK);',
  'my ($n, $m, $o) = @ARGV;',
  'sub id { my ($v, $get, $what) = @_; return $v if $v =~ /^\\d+$/; my $i = ($get->($v))[2]; defined $i or die "no $what named $v\\n"; $i }',
  // `user:` is the user's login group, as chown has it.
  'sub login { my $v = shift; my $g = $v =~ /^\\d+$/ ? (getpwuid($v))[3] : (getpwnam($v))[3]; defined $g or die "no user named $v\\n"; $g }',
  'sysopen(my $fh, $n, O_RDONLY | O_NOFOLLOW | O_NONBLOCK) or die "cannot open $n without following a link (it may have been swapped for one): $!\\n";',
  'if (length $o) { my ($ou, $og) = split /:/, $o, 2; my $u = length $ou ? id($ou, sub { getpwnam($_[0]) }, "user") : -1; my $g = defined $og && length $og ? id($og, sub { getgrnam($_[0]) }, "group") : defined $og && length $ou ? login($ou) : -1; chown($u, $g, $fh) or die "chown $n: $!\\n" }',
  'if (length $m) { chmod(oct($m), $fh) or die "chmod $n: $!\\n" }',
].join('\n');

/**
 * The sh functions, defined at the top of every host script that writes a path:
 * - `hs_cd DIR` / `hs_mkcd DIR`: enter DIR as described above (`hs_mkcd` makes what is missing,
 *   as `mkdir -p` would); status 0, 2 (a folder on the way is missing: hs_cd only) or 77 (refused);
 * - `hs_write NAME MODE OWNER`: stdin becomes NAME in the current folder, atomically (a new file
 *   renamed over it); MODE (octal) and OWNER (`user:group`, either part optional) default to what
 *   NAME has, or 0644 and the writer for a new file;
 * - `hs_meta NAME MODE OWNER`: sets what is given on NAME without following a link.
 */
export const SAFE_PATH_SH = [
  `hs_refuse() { printf 'hostsmith: refusing %s: %s\\n' "$1" "$2" >&2; return ${REFUSED}; }`,
  // Only root can add, remove or rename entries of the current folder, or (sticky) take root's own.
  'hs_rootheld() {',
  '  set -- $(stat -c "%u %g %a" .)',
  '  [ "$1" = 0 ] || return 1',
  '  [ $(( 0$3 & 01000 )) -ne 0 ] && return 0',
  '  [ $(( 0$3 & 02 )) -eq 0 ] || return 1',
  '  [ $(( 0$3 & 020 )) -eq 0 ] || [ "$2" = 0 ]',
  '}',
  'hs_enter() {',
  '  hs_make=$1; hs_want=/; cd / || return 1',
  '  set -f; hs_ifs=$IFS; IFS=/; set -- $2; IFS=$hs_ifs; set +f',
  '  for hs_c; do',
  '    [ -n "$hs_c" ] && [ "$hs_c" != . ] || continue',
  '    hs_next=${hs_want%/}/$hs_c',
  '    [ "$hs_c" != .. ] || { hs_refuse "$hs_next" "a path with .. in it"; return; }',
  '    if [ -L "$hs_c" ]; then',
  '      hs_u=$(stat -c %u -- "$hs_c")',
  '      if [ "$hs_u" != 0 ] || ! hs_rootheld; then hs_refuse "$hs_next" "it is a symbolic link (owned by uid $hs_u, in a folder owned by uid $(stat -c %u .)) that a user other than root could have planted or swapped; hostsmith does not write through it"; return; fi',
  '      cd -P -- "./$hs_c" || return 1',
  '      hs_want=$PWD; continue',
  '    fi',
  '    if [ ! -e "$hs_c" ]; then',
  `      [ "$hs_make" = 1 ] || return ${MISSING}`,
  '      mkdir -- "$hs_c" 2>/dev/null || [ -d "$hs_c" ] || { mkdir -- "$hs_c"; return 1; }',
  '    fi',
  `    [ -d "$hs_c" ] || { printf 'hostsmith: %s is not a folder\\n' "$hs_next" >&2; return 1; }`,
  '    cd -P -- "./$hs_c" || return 1',
  '    hs_now=$PWD',
  '    [ "$hs_now" = "$hs_next" ] || { hs_refuse "$hs_next" "it was swapped for a symbolic link (to $hs_now) while hostsmith used it"; return; }',
  '    hs_want=$hs_now',
  '  done',
  '}',
  'hs_cd() { hs_enter 0 "$1"; }',
  'hs_mkcd() { hs_enter 1 "$1"; }',
  `hs_write() { perl -e ${q(WRITE_PL)} -- "$@"; }`,
  `hs_meta() { perl -e ${q(META_PL)} -- "$@"; }`,
].join('\n');

/** `script` with the safe-path functions defined before it. */
export function withSafePath(script: string): string {
  return `${SAFE_PATH_SH}\n${script}`;
}

/** The folder and last component of an absolute, normalised path. */
export function splitPath(path: string): { dir: string; base: string } {
  const i = path.lastIndexOf('/');
  return { dir: i <= 0 ? '/' : path.slice(0, i), base: path.slice(i + 1) };
}

/**
 * Shell: enter `dir` safely or stop the script. `make`: create what is missing (as mkdir -p);
 * `missingOk`: a folder that is not there means nothing to do (exit 0), as a rollback of
 * something already gone.
 */
export function enterScript(dir: string, o: { make?: boolean; missingOk?: boolean } = {}): string {
  if (o.make) return `hs_mkcd ${q(dir)} || exit $?`;
  const missing = o.missingOk ? 'exit 0' : `{ printf '%s\\n' ${q(`hostsmith: folder ${dir} does not exist`)} >&2; exit 1; }`;
  return `hs_cd ${q(dir)} || { hs_rc=$?; [ $hs_rc -eq ${MISSING} ] && ${missing}; exit $hs_rc; }`;
}

/** The folders above an absolute, normalised path, outermost first, `/` included. */
export function folderPrefixes(path: string): string[] {
  const parts = path.split('/').filter(Boolean);
  return ['/', ...parts.slice(0, -1).map((_, i) => `/${parts.slice(0, i + 1).join('/')}`)];
}

/** What a read says (on stderr, exit 77) when a folder on its way is a link it will not follow. */
export function readRefusal(component: string, uid: string): string {
  return `hostsmith: refusing ${component}: it is a symbolic link (owned by uid ${uid}) that a user other than root could have planted or swapped; hostsmith does not read or write through it\n`;
}

/**
 * Shell for the read side: before a step reads `path`, it refuses the same planted links a
 * write would (exit 77, naming the component), so a plan neither shows what such a link points
 * at (root's files, in a diff) nor promises a change its apply would refuse. One `stat` over the
 * folders above the path; the write side still checks again as it enters them.
 *
 * `target`: the same `stat` also reads the path itself, and leaves its mode, owner and group (as
 * `stat` prints %a, %U and %G) in hs_ta, hs_tu and hs_tg, empty when the path is not there: a read
 * that needs them starts no `stat` of its own.
 */
export function unsafeParentsScript(path: string, o: { target?: boolean } = {}): string {
  const prefixes = folderPrefixes(path);
  // With the target, each path prints three lines: its numbers and kind, then the names of its
  // owner and group (a name holds no newline: the account files are made of lines).
  const format = o.target ? '%u %g %a %F\\n%U\\n%G\\n' : '%u %g %a %F\\n';
  const next = 'hs_l=${hs_st%%"$hs_nl"*}; if [ "$hs_l" = "$hs_st" ]; then hs_st=; else hs_st=${hs_st#*"$hs_nl"}; fi';
  return [
    `set -- ${[...prefixes, ...(o.target ? [path] : [])].map(q).join(' ')}`,
    // Only the leading paths that exist print, in order: the i-th block is the i-th path.
    // The lines are taken apart with the shell's own expansions, not a pipe into a loop: each
    // process a read starts is most of what a no-op costs the host.
    `hs_st=$(stat --printf "${format}" -- "$@" 2>/dev/null)`,
    "hs_i=0; hs_pu=; hs_pg=; hs_pa=; hs_bad=; hs_ta=; hs_tu=; hs_tg=; hs_nl='",
    "'",
    'while [ -n "$hs_st" ]; do',
    `  ${next}`,
    '  hs_i=$((hs_i+1))',
    ...(o.target ? [`  if [ $hs_i -gt ${prefixes.length} ]; then hs_ta=\${hs_l#* * }; hs_ta=\${hs_ta%% *}; ${next}; hs_tu=$hs_l; ${next}; hs_tg=$hs_l; break; fi`] : []),
    '  hs_u=${hs_l%% *}; hs_l=${hs_l#* }; hs_g=${hs_l%% *}; hs_l=${hs_l#* }; hs_a=${hs_l%% *}',
    '  if [ "${hs_l#* }" = "symbolic link" ]; then',
    '    if [ "$hs_u" != 0 ] || [ "$hs_pu" != 0 ] || { [ $(( 0$hs_pa & 01000 )) -eq 0 ] && { [ $(( 0$hs_pa & 02 )) -ne 0 ] || { [ $(( 0$hs_pa & 020 )) -ne 0 ] && [ "$hs_pg" != 0 ]; }; }; }; then hs_bad="$hs_i $hs_u"; break; fi',
    '  fi',
    '  hs_pu=$hs_u; hs_pg=$hs_g; hs_pa=$hs_a',
    ...(o.target ? [`  ${next}; ${next}`] : []),
    'done',
    `if [ -n "$hs_bad" ]; then eval "hs_c=\\\${\${hs_bad% *}}"; printf ${q(readRefusal('%s', '%s'))} "$hs_c" "\${hs_bad#* }" >&2; exit ${REFUSED}; fi`,
  ].join('\n');
}
