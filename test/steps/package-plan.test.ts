import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { packageSchema, packageStep, planPackage, type PackageState } from '../../src/steps/package/package.js';
import type { StepContext } from '../../src/steps/step.js';
import {
  dpkgChanges,
  dpkgErrors,
  parseDpkgList,
  parseExtendedStates,
  parsePolicy,
  parseSim,
  policyScript,
  simulateScript,
  splitSim,
  splitState,
  cksum,
  stateScript,
  INPUTS_STAMP,
  transactionArgs,
  unknownPackages,
  missingVersions,
} from '../../src/steps/package/apt.js';

const params = (o: Record<string, unknown>) => packageSchema.parse(o);
const ok = (version: string) => ({ version, status: 'install ok installed' });
const rc = (version: string) => ({ version, status: 'deinstall ok config-files' });

/** apt-get -s output for `install hello jq` on a host that has none of them. */
const SIM_JQ = `Reading package lists...
Building dependency tree...
The following additional packages will be installed:
  libjq1 libonig5
The following NEW packages will be installed:
  hello jq libjq1 libonig5
0 upgraded, 4 newly installed, 0 to remove and 0 not upgraded.
Inst hello (2.10-3 Debian:12.15/oldstable [amd64])
Inst libonig5 (6.9.8-1 Debian:12.15/oldstable [amd64])
Inst libjq1 (1.6-2.1+deb12u2 Debian:12.15/oldstable [amd64])
Inst jq (1.6-2.1+deb12u2 Debian:12.15/oldstable [amd64])
Conf hello (2.10-3 Debian:12.15/oldstable [amd64])
Conf libonig5 (6.9.8-1 Debian:12.15/oldstable [amd64])
Conf libjq1 (1.6-2.1+deb12u2 Debian:12.15/oldstable [amd64])
Conf jq (1.6-2.1+deb12u2 Debian:12.15/oldstable [amd64])
`;

describe('package schema', () => {
  it('accepts names, name=version and a single name', () => {
    expect(params({ install: ['hello', 'libnginx-mod-http-echo=1:0.63-4', 'g++', 'libstdc++6'] }).install).toHaveLength(4);
    expect(params({ install: 'hello' }).install).toEqual(['hello']);
    expect(params({ update_cache: true })).toMatchObject({ install: [], remove: [], update_cache: true, cache_valid_time: 3_600_000 });
    expect(params({ update_cache: true, cache_valid_time: '1d' }).cache_valid_time).toBe(86_400_000);
  });
  const bad: Array<[string, Record<string, unknown>, RegExp, Array<string | number>]> = [
    ['upper case', { install: ['hello', 'Nginx'] }, /"Nginx": not a valid Debian package name/, ['install', 1]],
    ['a shell injection', { install: ['hello; rm -rf /'] }, /not a valid Debian package name/, ['install', 0]],
    ['an option', { remove: ['-y'] }, /not a valid Debian package name/, ['remove', 0]],
    ['one letter', { install: ['a'] }, /not a valid Debian package name/, ['install', 0]],
    ['a bad version', { install: ['hello=latest'] }, /"latest" is not a valid Debian version/, ['install', 0]],
    ['a version on remove', { remove: ['hello=2.10-3'] }, /not a valid Debian package name/, ['remove', 0]],
    ['nothing to do', {}, /nothing to do/, ['install']],
    ['install and remove the same', { install: ['hello'], remove: ['hello'] }, /both installed and removed/, ['remove', 0]],
    ['an unknown key', { name: 'hello' }, /Unrecognized key/, []],
    ['a bad cache_valid_time', { update_cache: true, cache_valid_time: 'soon' }, /invalid duration "soon"/, ['cache_valid_time']],
  ];
  it.each(bad)('rejects %s', (_n, input, message, path) => {
    const r = packageSchema.safeParse(input);
    expect(r.success).toBe(false);
    const issue = r.error!.issues.find((i) => message.test(i.message));
    expect(issue, JSON.stringify(r.error!.issues)).toBeDefined();
    expect(issue!.path).toEqual(path);
  });
});

describe('planPackage: (params, state) → plan', () => {
  const base: PackageState = { dpkg: { bash: ok('5.2.15-2+b7') }, listsAgeS: 600 };

  it('is unchanged when every package is as wanted, without simulating', () => {
    const s: PackageState = { ...base, dpkg: { ...base.dpkg, hello: ok('2.10-3'), sl: rc('5.02-1+b1') } };
    const p = planPackage(params({ install: ['hello'], remove: ['sl', 'nosuch'] }), s);
    expect(p).toEqual({ changed: false, summary: 'hello installed; sl, nosuch absent', undo: null });
  });

  it('installs named packages and the dependencies apt pulls in; undo purges exactly those', () => {
    const p = planPackage(params({ install: ['hello', 'jq'] }), { ...base, sim: parseSim(SIM_JQ) });
    expect(p.changed).toBe(true);
    expect(p.summary).toBe('install hello, jq + dependencies libjq1, libonig5');
    expect(p.undo).toEqual({ purge: ['hello', 'jq', 'libjq1', 'libonig5'], remove: [], reinstall: [] });
    expect(p.diff).toContain('+libonig5 6.9.8-1');
    expect(p.diff).toContain('+jq 1.6-2.1+deb12u2');
  });

  it('a package that only had config files left is removed, not purged, on rollback', () => {
    const s: PackageState = { ...base, dpkg: { ...base.dpkg, libonig5: rc('6.9.8-1') }, sim: parseSim(SIM_JQ) };
    expect(planPackage(params({ install: ['hello', 'jq'] }), s).undo).toEqual({ purge: ['hello', 'jq', 'libjq1'], remove: ['libonig5'], reinstall: [] });
  });

  it('removes a package with its reverse dependencies; undo reinstalls the same versions and auto marks', () => {
    const sim = parseSim('Remv jq [1.6-2.1+deb12u2]\nRemv libjq1 [1.6-2.1+deb12u2]\nRemv libonig5 [6.9.8-1]\n');
    const dpkg = { ...base.dpkg, jq: ok('1.6-2.1+deb12u2'), libjq1: ok('1.6-2.1+deb12u2'), libonig5: ok('6.9.8-1') };
    const p = planPackage(params({ remove: ['libonig5'] }), { ...base, dpkg, sim, auto: ['libjq1', 'libonig5'] });
    expect(p.summary).toBe('remove libonig5 + dependents jq, libjq1');
    expect(p.undo).toEqual({
      purge: [],
      remove: [],
      reinstall: [
        { name: 'jq', version: '1.6-2.1+deb12u2', auto: false },
        { name: 'libjq1', version: '1.6-2.1+deb12u2', auto: true },
        { name: 'libonig5', version: '6.9.8-1', auto: true },
      ],
    });
    expect(p.diff).toContain('-jq 1.6-2.1+deb12u2');
  });

  it('a pinned version that differs from the installed one is a change; undo goes back to the old version', () => {
    const dpkg = { ...base.dpkg, hello: ok('2.10-2') };
    const p = planPackage(params({ install: ['hello=2.10-3'] }), { ...base, dpkg, sim: parseSim('Inst hello [2.10-2] (2.10-3 Debian:12 [amd64])\n'), auto: [] });
    expect(p.summary).toBe('change hello 2.10-2 → 2.10-3');
    expect(p.undo).toEqual({ purge: [], remove: [], reinstall: [{ name: 'hello', version: '2.10-2', auto: false }] });
    expect(planPackage(params({ install: ['hello=2.10-2'] }), { ...base, dpkg }).changed).toBe(false);
  });

  it('a virtual package apt finds satisfied is unchanged', () => {
    const p = planPackage(params({ install: ['mail-transport-agent'] }), { ...base, sim: parseSim('Reading package lists...\n') });
    expect(p).toMatchObject({ changed: false, summary: 'mail-transport-agent installed (already satisfied)' });
  });

  describe('update_cache', () => {
    it('alone: refreshes only when the lists are older than cache_valid_time', () => {
      expect(planPackage(params({ update_cache: true }), { ...base, listsAgeS: 7200 })).toEqual({
        changed: true,
        summary: 'refresh apt lists (refreshed 2 h ago)',
        undo: { purge: [], remove: [], reinstall: [] },
      });
      expect(planPackage(params({ update_cache: true }), { ...base, listsAgeS: 600 })).toMatchObject({ changed: false, summary: 'apt lists are fresh (refreshed 10 min ago)' });
      expect(planPackage(params({ update_cache: true, cache_valid_time: 60 }), { ...base, listsAgeS: 600 }).changed).toBe(true);
      expect(planPackage(params({ update_cache: true }), { ...base, listsAgeS: null }).summary).toBe('refresh apt lists (never refreshed)');
    });
    it('with packages already installed: nothing changes, however old the lists', () => {
      const s: PackageState = { ...base, dpkg: { hello: ok('2.10-3') }, listsAgeS: 999_999 };
      expect(planPackage(params({ install: ['hello'], update_cache: true }), s).changed).toBe(false);
    });
    it('with packages to install: refreshes first when stale or when fresh lists were needed to plan', () => {
      const sim = parseSim(SIM_JQ);
      expect(planPackage(params({ install: ['hello', 'jq'], update_cache: true }), { ...base, listsAgeS: 90_000, sim }).summary).toMatch(
        /^refresh apt lists \(refreshed 25 h ago\), then install hello, jq/,
      );
      expect(planPackage(params({ install: ['hello', 'jq'], update_cache: true }), { ...base, sim }).summary).toMatch(/^install hello/);
      expect(planPackage(params({ install: ['hello', 'jq'], update_cache: true }), { ...base, sim, freshLists: true }).summary).toMatch(/^refresh apt lists/);
    });
  });
});

describe('apt output parsing', () => {
  it('reads Inst, Remv and Purg lines, with and without old versions, ignoring Conf', () => {
    const sim = parseSim(`Inst libfoo:i386 [1.0] (1.1 Debian:12 [i386]) []
Inst hello (2.10-3 Debian:12.15/oldstable [amd64])
Remv sl [5.02-1+b1]
Purg jq [1.6-2.1+deb12u2]
Conf hello (2.10-3 Debian:12.15/oldstable [amd64])
`);
    expect(sim).toEqual({
      inst: [
        { name: 'libfoo:i386', version: '1.1', from: '1.0' },
        { name: 'hello', version: '2.10-3' },
      ],
      remv: [
        { name: 'sl', version: '5.02-1+b1' },
        { name: 'jq', version: '1.6-2.1+deb12u2' },
      ],
    });
  });
  it('splits the dry run from the auto-installed list', () => {
    expect(splitSim('Remv jq [1.6]\n--- auto\nlibjq1\nlibonig5\n')).toEqual({ sim: { inst: [], remv: [{ name: 'jq', version: '1.6' }] }, auto: ['libjq1', 'libonig5'] });
    expect(splitSim(SIM_JQ).auto).toEqual([]);
  });
  it('reads dpkg-query output and the age of the lists', () => {
    const s = splitState(
      'dpkg\tamd64\t1.21.22\tinstall ok installed\nhello\tamd64\t2.10-3\tinstall ok installed\nsl\tamd64\t5.02-1+b1\tdeinstall ok config-files\n--- clock\n1000042\n--- stat\n/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease 7 100 1000000\n',
    );
    expect(s).toMatchObject({ dpkg: { hello: ok('2.10-3'), 'hello:amd64': ok('2.10-3'), sl: rc('5.02-1+b1'), 'sl:amd64': rc('5.02-1+b1') }, listsAgeS: 42 });
    // The newest of the refresh stamp and the Release files counts; other inputs do not.
    const stats = [
      '/var/lib/apt/periodic/update-success-stamp 1 0 999000',
      '/var/lib/dpkg/status 2 50 1000041',
      '/var/lib/apt/lists/a_InRelease 3 9 1000040',
      '/var/lib/apt/lists/a_main_binary-amd64_Packages 4 9 1000041',
      '/var/lib/apt/lists/b_Release 5 9 1000000',
      '/etc/apt/sources.list 6 9 1000041',
    ];
    const both = splitState(`dpkg\tamd64\t1.21.22\tinstall ok installed\n--- clock\n1000042\n--- stat\n${stats.join('\n')}\n`);
    expect(both.listsAgeS).toBe(2);
    // The inputs' stamp leaves the refresh stamp out: what INPUTS_STAMP's cksum prints over the rest.
    expect(both.inputs).toBe(cksum(Buffer.from(`${stats.slice(1).join('\n')}\n`)));
    // No lists at all, or only lists from the host's future: never refreshed, as far as the step can tell.
    expect(splitState('--- clock\n1000042\n--- stat\n/var/lib/dpkg/status 2 50 1000041\n').listsAgeS).toBeNull();
    expect(splitState('--- clock\n1000042\n--- stat\n/var/lib/apt/lists/b_Release 5 9 1000050\n').listsAgeS).toBeNull();
  });
  it('finds packages of a foreign architecture by name:arch, as apt names them, and native ones by bare name', () => {
    const { dpkg } = splitState(
      'libc6\ti386\t2.36-9\tinstall ok installed\nlibc6\tamd64\t2.36-8\tinstall ok installed\ndpkg\tamd64\t1.21.22\tinstall ok installed\ntzdata\tall\t2024a\tinstall ok installed\n--- clock\n2\n--- stat\n',
    );
    expect(dpkg['libc6']).toEqual(ok('2.36-8'));
    expect(dpkg['libc6:i386']).toEqual(ok('2.36-9'));
    expect(dpkg['tzdata']).toEqual(ok('2024a'));
  });
  it('finds the names apt does not know', () => {
    const err = `E: Unable to locate package nosuch\nE: Package 'ghost' has no installation candidate\nE: Version '9.9' for 'hello' was not found\n`;
    expect(unknownPackages(err)).toEqual(['nosuch', 'ghost', 'hello']);
    expect(missingVersions(err)).toEqual(['hello']);
    expect(unknownPackages('E: Unable to correct problems, you have held broken packages.')).toEqual([]);
  });
  it('builds one quoted transaction: installs, then removals with a trailing -', () => {
    expect(transactionArgs([{ name: 'hello' }, { name: 'jq', version: '1:1.6' }], ['sl'])).toBe('hello jq=1:1.6 sl-');
    expect(simulateScript('hello')).toMatch(/apt-get -s -q .* install hello/);
    expect(simulateScript('hello', true)).toMatch(/Dir::State::Lists="\$d\/lists".*update/);
  });
  it('keeps every apt call of the dry run from writing its caches and planner log', () => {
    for (const script of [simulateScript('hello'), simulateScript('hello', true), simulateScript('hello', true, '1 2', false)]) {
      const calls = script.split('\n').flatMap((l) => l.match(/apt-(?:get|mark) [^|;)]*/g) ?? []);
      expect(calls.length).toBeGreaterThanOrEqual(2);
      for (const c of calls) {
        expect(c).toContain('-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=');
        expect(c).toContain('-o Dir::Log::Planner=/dev/null');
      }
    }
  });
  it("an apply's dry run keeps apt's binary cache for the install after it, and never its planner log", () => {
    const calls = simulateScript('hello', false, '1 2', false)
      .split('\n')
      .flatMap((l) => l.match(/apt-(?:get|mark) [^|;)]*/g) ?? []);
    expect(calls.length).toBeGreaterThanOrEqual(2);
    for (const c of calls) {
      expect(c).not.toContain('Dir::Cache');
      expect(c).toContain('-o Dir::Log::Planner=/dev/null');
    }
  });
});

describe('apt failure messages', () => {
  it('keeps dpkg errors and their details from apt output', () => {
    const out = `Unpacking jq (1.6-2.1+deb12u2) ...
dpkg: error processing archive /var/cache/apt/archives/jq_1.6-2.1+deb12u2_amd64.deb (--unpack):
 trying to overwrite '/usr/bin/jq', which is also in package blocker 1.0
Errors were encountered while processing:
 /var/cache/apt/archives/jq_1.6-2.1+deb12u2_amd64.deb
`;
    expect(dpkgErrors(out)).toEqual([
      'dpkg: error processing archive /var/cache/apt/archives/jq_1.6-2.1+deb12u2_amd64.deb (--unpack):',
      "trying to overwrite '/usr/bin/jq', which is also in package blocker 1.0",
    ]);
  });
});

describe('a plain apply installs with no dry run (StepContext.planUnseen)', () => {
  const base: PackageState = { dpkg: { bash: ok('5.2.15-2+b7'), hello: ok('2.9-1') }, listsAgeS: 600 };

  it('plans the named packages only, with undo data that points at the snapshot the install takes', () => {
    const p = planPackage(params({ install: ['jq', 'hello=2.10-3'] }), { ...base, known: true });
    expect(p).toEqual({
      changed: true,
      action: 'create',
      summary: 'install jq, hello 2.9-1 → 2.10-3 (with what apt adds to it)',
      undo: { purge: [], remove: [], reinstall: [], snapshot: true },
    });
    // Nothing to install: no snapshot, no change.
    expect(planPackage(params({ install: ['hello'] }), { ...base, known: true }).changed).toBe(false);
  });

  it('a removal is not left without its dry run: apt may take dependents along', () => {
    const s: PackageState = { ...base, known: true };
    expect(() => planPackage(params({ remove: ['hello'] }), s)).toThrow(/did not simulate/);
  });

  it('reads apt-cache policy: candidates, (none) for a virtual package, every version in the table', () => {
    const out = `tree:
  Installed: (none)
  Candidate: 2.1.0-1
  Version table:
     2.1.0-1 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
hello:
  Installed: 2.9-1
  Candidate: 2.10-3
  Version table:
     2.10-3 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
 *** 2.9-1 100
        100 /var/lib/dpkg/status
mail-transport-agent:
  Installed: (none)
  Candidate: (none)
  Version table:
`;
    expect(parsePolicy(out)).toEqual({
      tree: { candidate: '2.1.0-1', versions: ['2.1.0-1'] },
      hello: { candidate: '2.10-3', versions: ['2.10-3', '2.9-1'] },
      'mail-transport-agent': { candidate: null, versions: [] },
    });
    // An unknown name prints nothing at all.
    expect(parsePolicy('')).toEqual({});
    expect(policyScript(['tree', "x'y"], '1 2')).toBe("# hostsmith-memo: 1 2\napt-cache -q policy tree 'x'\\''y'");
  });

  it('works out what a transaction did from dpkg before and after, as the dry run would have said it', () => {
    const before = parseDpkgList(
      'amd64\nbash\tamd64\t5.2\tinstall ok installed\nlibonig5\tamd64\t6.9.8-1\tdeinstall ok config-files\nlibc6\ti386\t2.36-8\tinstall ok installed\nold\tall\t1\tinstall ok installed\nlibc-bin\tamd64\t2.36\tinstall ok installed\n',
    );
    const after = parseDpkgList(
      [
        'amd64',
        'bash\tamd64\t5.3\tinstall ok installed',
        'libonig5\tamd64\t6.9.8-1\tinstall ok installed',
        'libc6\ti386\t2.36-9\tinstall ok installed',
        'hello\tamd64\t2.10-3\tinstall ok unpacked',
        'jq\tamd64\t\tinstall ok not-installed',
        'old\tall\t1\tdeinstall ok config-files',
        'libc-bin\tamd64\t2.36\tinstall ok triggers-pending',
        '',
      ].join('\n'),
    );
    // A name dpkg only heard of (listed with '*') is no entry at all.
    expect(parseDpkgList('amd64\nfoo\tamd64\t\tunknown ok not-installed\n').dpkg).toEqual({});
    const sim = dpkgChanges(before.dpkg, after.dpkg, before.arch);
    expect(sim).toEqual({
      inst: [
        { name: 'bash', version: '5.3', from: '5.2' },
        // Unpacked by a transaction that stopped part-way, and an entry it left for what it never unpacked.
        { name: 'hello', version: '2.10-3' },
        { name: 'jq', version: '' },
        { name: 'libc6:i386', version: '2.36-9', from: '2.36-8' },
        { name: 'libonig5', version: '6.9.8-1' },
      ],
      remv: [{ name: 'old', version: '1' }],
    });
    // As undo data: the config-files package is removed, not purged; replaced versions come back.
    const p = planPackage(params({ install: ['jq'] }), { dpkg: before.dpkg, listsAgeS: 1, sim, auto: ['libc6:i386'] });
    expect(p.undo).toEqual({
      purge: ['hello', 'jq'],
      remove: ['libonig5'],
      reinstall: [
        { name: 'bash', version: '5.2', auto: false },
        { name: 'libc6:i386', version: '2.36-8', auto: true },
        { name: 'old', version: '1', auto: false },
      ],
    });
  });

  it('reads the auto marks of extended_states by the name apt gives them', () => {
    const text = 'Package: libjq1\nArchitecture: amd64\nAuto-Installed: 1\n\nPackage: jq\nArchitecture: amd64\nAuto-Installed: 0\n\nPackage: libc6\nArchitecture: i386\nAuto-Installed: 1\n';
    expect(parseExtendedStates(text, 'amd64')).toEqual(['libjq1', 'libc6:i386']);
    expect(parseExtendedStates('', 'amd64')).toEqual([]);
  });
});

/**
 * The check: what the host answers to the step's one read (dpkg's status, the lists' age, the
 * stamp of apt's inputs) decides whether apt is asked at all. A fake host answers each command by
 * its kind and records it, so each row says which apt reads the check made and what it planned.
 */
describe('packageStep.check: (params, host answers) → apt asked? → plan', () => {
  const DPKG = [
    'dpkg\tamd64\t1.21.22\tinstall ok installed',
    'bash\tamd64\t5.2.15-2+b7\tinstall ok installed',
    'curl\tamd64\t7.88.1-10+deb12u15\tinstall ok installed',
    'less\tamd64\t590-2.1~deb12u2\thold ok installed',
    'sudo\tamd64\t1.9.13p3-1+deb12u4\tinstall ok installed',
    'sl\tamd64\t5.02-1+b1\tdeinstall ok config-files',
    'jq\tamd64\t1.6-2.1+deb12u2\tinstall ok half-installed',
    'wget\tamd64\t1.21.3-1+b2\tdeinstall ok installed',
    'vim\tamd64\t2:9.0.1378-2\tinstall reinstreq half-installed',
  ].join('\n');
  const STATE = `${DPKG}\n--- clock\n1000600\n--- stat\n/var/lib/apt/lists/x_InRelease 1 1748 1000000\n`;
  const POLICY = (name: string, v: string) =>
    `${name}:\n  Installed: (none)\n  Candidate: ${v}\n  Version table:\n     ${v} 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n`;

  function host(answers: { policy?: string; sim?: string }) {
    const asked: string[] = [];
    const ctx = {
      host: 'h1',
      step: 'S',
      runId: 'R1',
      backupDir: '/var/lib/hostsmith/backups/R1',
      exec: async (cmd: string) => {
        const kind = /apt-cache -q policy/.test(cmd) ? 'policy' : /apt-get -s/.test(cmd) ? 'dry run' : /dpkg-query -W/.test(cmd) ? 'dpkg' : 'other';
        asked.push(kind);
        const stdout = kind === 'dpkg' ? STATE : kind === 'policy' ? (answers.policy ?? '') : kind === 'dry run' ? (answers.sim ?? '') : '';
        return { code: kind === 'other' ? 1 : 0, stdout, stderr: '', stdoutRaw: Buffer.from(stdout) };
      },
    } as unknown as StepContext;
    return { ctx, asked };
  }

  // Decided from dpkg alone: one read, no apt, the same plan as before.
  const cheap: Array<[string, Record<string, unknown>, string]> = [
    ['three installed packages', { install: ['bash', 'curl', 'sudo'] }, 'bash, curl, sudo installed'],
    ['three installed packages, one of them held', { install: ['curl', 'less', 'sudo'] }, 'curl, less, sudo installed'],
    ['a held package (apt-mark hold) that is installed', { install: ['less'] }, 'less installed'],
    ['a pinned version that is the installed one', { install: ['curl=7.88.1-10+deb12u15'] }, 'curl=7.88.1-10+deb12u15 installed'],
    ['a pinned version a held package is at', { install: ['less=590-2.1~deb12u2'] }, 'less=590-2.1~deb12u2 installed'],
    ['removals of packages not installed or with config files only', { remove: ['nosuch', 'sl'] }, 'nosuch, sl absent'],
    ['installed packages with update_cache, however old the lists', { install: ['curl'], update_cache: true, cache_valid_time: 1 }, 'curl installed'],
  ];
  for (const lean of [true, false]) {
    it.each(cheap)(`${lean ? 'apply' : 'plan'}: %s → dpkg only, unchanged`, async (_n, input, summary) => {
      const { ctx, asked } = host({});
      Object.assign(ctx, lean ? { planUnseen: true } : { planOnly: true });
      const p = params(input);
      const s = await packageStep.check(ctx, p);
      expect(asked).toEqual(['dpkg']);
      expect(planPackage(p, s)).toEqual({ changed: false, summary, undo: null });
    });
  }

  // What dpkg alone cannot decide still goes to apt, with the plan it made before.
  const SIM_VIM = 'Inst vim [2:9.0.1378-2] (2:9.0.1378-2 Debian:12 [amd64])\n';
  const needsApt: Array<[string, Record<string, unknown>, { policy?: string; sim?: string }, string[], string, string[], string]> = [
    [
      'a package not installed',
      { install: ['hello'] },
      { policy: POLICY('hello', '2.10-3'), sim: SIM_JQ },
      ['dpkg', 'policy'],
      'install hello (with what apt adds to it)',
      ['dpkg', 'dry run'],
      'install hello + dependencies jq, libjq1, libonig5',
    ],
    [
      'one of three not installed',
      { install: ['curl', 'hello', 'sudo'] },
      { policy: POLICY('hello', '2.10-3'), sim: 'Inst hello (2.10-3 Debian:12 [amd64])\n' },
      ['dpkg', 'policy'],
      'install hello (with what apt adds to it)',
      ['dpkg', 'dry run'],
      'install hello',
    ],
    [
      'a package with only config files left',
      { install: ['sl'] },
      { policy: POLICY('sl', '5.02-1+b1'), sim: 'Inst sl (5.02-1+b1 Debian:12 [amd64])\n' },
      ['dpkg', 'policy'],
      'install sl (with what apt adds to it)',
      ['dpkg', 'dry run'],
      'install sl',
    ],
    [
      'a half-installed package',
      { install: ['jq'] },
      { policy: POLICY('jq', '1.6-2.1+deb12u2'), sim: 'Inst jq (1.6-2.1+deb12u2 Debian:12 [amd64])\n' },
      ['dpkg', 'policy'],
      'install jq (with what apt adds to it)',
      ['dpkg', 'dry run'],
      'install jq',
    ],
    [
      'a package that needs reinstalling',
      { install: ['vim'] },
      { policy: POLICY('vim', '2:9.0.1378-2'), sim: SIM_VIM },
      ['dpkg', 'policy'],
      'install vim (with what apt adds to it)',
      ['dpkg', 'dry run'],
      'change vim 2:9.0.1378-2 → 2:9.0.1378-2',
    ],
    [
      'an installed package selected for removal',
      { install: ['wget'] },
      { policy: POLICY('wget', '1.21.3-1+b2'), sim: '' },
      ['dpkg', 'policy'],
      'install wget (with what apt adds to it)',
      ['dpkg', 'dry run'],
      'wget installed (already satisfied)',
    ],
    [
      'a pinned version other than the installed one',
      { install: ['curl=7.88.1-10+deb12u16'] },
      { policy: POLICY('curl', '7.88.1-10+deb12u16'), sim: 'Inst curl [7.88.1-10+deb12u15] (7.88.1-10+deb12u16 Debian:12 [amd64])\n' },
      ['dpkg', 'policy'],
      'install curl 7.88.1-10+deb12u15 → 7.88.1-10+deb12u16 (with what apt adds to it)',
      ['dpkg', 'dry run'],
      'change curl 7.88.1-10+deb12u15 → 7.88.1-10+deb12u16',
    ],
    [
      'a pinned version other than the one a package is held at',
      { install: ['less=590-2.1~deb12u3'] },
      { policy: POLICY('less', '590-2.1~deb12u3'), sim: 'Inst less [590-2.1~deb12u2] (590-2.1~deb12u3 Debian:12 [amd64])\n' },
      ['dpkg', 'policy'],
      'install less=590-2.1~deb12u3 (with what apt adds to it)',
      ['dpkg', 'dry run'],
      'change less 590-2.1~deb12u2 → 590-2.1~deb12u3',
    ],
    [
      'a virtual package dpkg has no entry for',
      { install: ['mail-transport-agent'] },
      { policy: 'mail-transport-agent:\n  Installed: (none)\n  Candidate: (none)\n', sim: '' },
      ['dpkg', 'policy', 'dry run'],
      'mail-transport-agent installed (already satisfied)',
      ['dpkg', 'dry run'],
      'mail-transport-agent installed (already satisfied)',
    ],
    ['a removal of an installed package', { remove: ['curl'] }, { sim: 'Remv curl [7.88.1-10+deb12u15]\n' }, ['dpkg', 'dry run'], 'remove curl', ['dpkg', 'dry run'], 'remove curl'],
  ];
  it.each(needsApt)('%s → apt is asked; the plans are as before', async (_n, input, answers, leanAsked, leanSummary, planAsked, planSummary) => {
    const p = params(input);
    const apply = host(answers);
    Object.assign(apply.ctx, { planUnseen: true });
    expect(planPackage(p, await packageStep.check(apply.ctx, p)).summary).toBe(leanSummary);
    expect(apply.asked).toEqual(leanAsked);
    const plan = host(answers);
    Object.assign(plan.ctx, { planOnly: true });
    expect(planPackage(p, await packageStep.check(plan.ctx, p)).summary).toBe(planSummary);
    expect(plan.asked).toEqual(planAsked);
  });
});

describe("the package read's stamp of apt's inputs", () => {
  it('cksum here prints what cksum prints', () => {
    const cases = [Buffer.alloc(0), Buffer.from('a'), Buffer.from('hello\n'), Buffer.alloc(255, 7), Buffer.alloc(256, 1), Buffer.alloc(70000, 200)];
    for (const data of cases) expect(cksum(data)).toBe(execFileSync('cksum', { input: data, encoding: 'utf8' }).trim());
  });

  it('is, on this machine, what the guard then reads: INPUTS_STAMP run on its own', () => {
    // Globs sort as the package step's own environment sorts them.
    const env = { ...process.env, LC_ALL: 'C' };
    const read = execFileSync('/bin/sh', ['-c', stateScript()], { env });
    const guard = execFileSync('/bin/sh', ['-c', INPUTS_STAMP], { env, encoding: 'utf8' }).trim();
    expect(splitState(read).inputs).toBe(guard);
  });
});
