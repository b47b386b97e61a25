/**
 * `apt_repository`: params → footprint, the deb822 file it renders, the list-file names apt gives
 * the source, and params + what the host shows → plan (the .sources file, the key in its form,
 * the key in the other form) with the undo data a rollback works from.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import type { PathState } from '../../src/steps/file-state.js';
import { meets } from '../../src/steps/footprint.js';
import { packageSchema, packageStep } from '../../src/steps/package/package.js';
import {
  aptRepositorySchema,
  aptRepositoryStep,
  dropListsScript,
  keyForm,
  listPrefix,
  parseSources,
  planAptRepository,
  renderSources,
  restrictedUpdateScript,
  type AptRepositoryState,
} from '../../src/steps/apt_repository/apt_repository.js';

const env = { runId: 'R1', step: 'Docker', backupDir: '/var/lib/hostsmith/backups/R1' };
const ARMORED = '-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBFit2ioBEADhWpZ8/wvZ6hUTiXOwQHXMAlaFHcPH9hAtr4F1y2+OYdbtMuth\n-----END PGP PUBLIC KEY BLOCK-----\n';
const BINARY = Buffer.from([0x99, 0x02, 0x0d, 0x04, 0x58, 0xad, 0xda, 0x2a]);
const docker = (o: Record<string, unknown> = {}) =>
  aptRepositorySchema.parse({ name: 'docker', uris: 'https://download.docker.com/linux/debian', suites: 'bookworm', components: 'stable', key: { content: ARMORED }, ...o });
const file = (content: string | Buffer, mode = 0o644): PathState => ({ kind: 'file', content: Buffer.from(content), mode, owner: 'root', group: 'root', missing: [] });
const absent = (missing: string[] = []): PathState => ({ kind: 'absent', missing });
const SOURCES = 'Types: deb\nURIs: https://download.docker.com/linux/debian\nSuites: bookworm\nComponents: stable\nSigned-By: /etc/apt/keyrings/docker.asc\n';
const fresh: AptRepositoryState = { sources: absent(), asc: absent(['/etc/apt/keyrings']), gpg: absent(['/etc/apt/keyrings']) };

describe('apt_repository: params', () => {
  it.each([
    [{ key: undefined }, /needs its signing key/],
    [{ components: undefined }, /needs components/],
    [{ suites: './', components: 'stable' }, /flat repository \(suite \.\/\) has no components/],
    [{ name: 'a/b' }, /file stem/],
    [{ uris: 'download.docker.com' }, /a URI such as/],
    [{ uris: 'https://x/ y' }, /a URI such as/],
    [{ key: { file: 'k.asc', content: ARMORED } }, /Unrecognized key|invalid/i],
    [{ state: 'absent', update_cache: true }, /update_cache is for state: present/],
  ])('%j is refused: %s', (o, why) => {
    const r = aptRepositorySchema.safeParse({ name: 'docker', uris: 'https://download.docker.com/linux/debian', suites: 'bookworm', components: 'stable', key: { content: ARMORED }, ...o });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(why);
  });

  it('a string or a list for uris, suites, components and architectures; state absent needs only the name', () => {
    expect(docker({ suites: ['bookworm', 'bookworm-backports'], architectures: 'amd64' })).toMatchObject({
      uris: ['https://download.docker.com/linux/debian'],
      suites: ['bookworm', 'bookworm-backports'],
      components: ['stable'],
      architectures: ['amd64'],
      state: 'present',
      update_cache: false,
    });
    expect(aptRepositorySchema.parse({ name: 'docker', state: 'absent' })).toEqual({ name: 'docker', state: 'absent', update_cache: false });
  });
});

describe('apt_repository: footprint (params → what it reads and writes)', () => {
  it('its three paths, and apt lists: a later package step is known only after it applies', () => {
    const paths = ['path:/etc/apt/sources.list.d/docker.sources', 'path:/etc/apt/keyrings/docker.asc', 'path:/etc/apt/keyrings/docker.gpg'];
    expect(aptRepositoryStep.footprint(docker())).toEqual({ reads: paths, writes: [...paths, 'apt:lists', 'path:/var/lib/apt/lists'] });
    expect(aptRepositoryStep.footprint(aptRepositorySchema.parse({ name: 'docker', state: 'absent' })).writes).toContain('apt:lists');
    const later = packageStep.footprint(packageSchema.parse({ install: ['docker-ce'] }));
    expect(meets(aptRepositoryStep.footprint(docker()).writes, later.reads)).toBe(true);
  });
});

describe('renderSources: deb822', () => {
  it('lists joined by blanks, optional fields only when given', () => {
    expect(
      renderSources(
        docker({ uris: ['https://a/debian', 'https://b/debian'], suites: ['bookworm', 'bookworm-updates'], components: ['main', 'contrib'], architectures: ['amd64', 'arm64'] }),
        '/etc/apt/keyrings/docker.gpg',
      ),
    ).toBe('Types: deb\nURIs: https://a/debian https://b/debian\nSuites: bookworm bookworm-updates\nComponents: main contrib\nArchitectures: amd64 arm64\nSigned-By: /etc/apt/keyrings/docker.gpg\n');
    expect(renderSources(docker(), '/etc/apt/keyrings/docker.asc')).toBe(SOURCES);
    expect(renderSources(docker({ suites: './', components: undefined }), '/k.asc')).toBe('Types: deb\nURIs: https://download.docker.com/linux/debian\nSuites: ./\nSigned-By: /k.asc\n');
  });

  it('reads URIs and Suites back from a file on the host', () => {
    expect(parseSources(`${SOURCES}\nTypes: deb\nURIs: http://x/y\nSuites: a b\n`)).toEqual({ uris: ['https://download.docker.com/linux/debian', 'http://x/y'], suites: ['bookworm', 'a', 'b'] });
  });
});

describe('listPrefix: the names apt gives a source in /var/lib/apt/lists', () => {
  it.each([
    ['http://deb.debian.org/debian', 'bookworm-backports', 'deb.debian.org_debian_dists_bookworm-backports_'],
    ['https://download.docker.com/linux/debian/', 'bookworm', 'download.docker.com_linux_debian_dists_bookworm_'],
    ['https://user:pw@repo.example.org:8443/apt', 'stable/updates', 'repo.example.org:8443_apt_dists_stable_updates_'],
    ['https://repo.example.org/my_repo', './', 'repo.example.org_my%5frepo_'],
    ['https://repo.example.org/flat', 'sub/', 'repo.example.org_flat_sub_'],
  ])('%s %s → %s', (u, s, want) => {
    expect(listPrefix(u, s)).toBe(want);
  });

  it('keeps the lists another source still uses, and globs no name it did not build', () => {
    const sh = dropListsScript(['deb.debian.org_debian_dists_bookworm-backports_', "x'; rm -rf / #_"]);
    expect(sh).toMatch(/grep -qF '?\/var\/lib\/apt\/lists\/deb\.debian\.org_debian_dists_bookworm-backports_'?;/);
    expect(sh).toMatch(/rm -f -- '?deb\.debian\.org_debian_dists_bookworm-backports_'?\* partial\/'?deb\.debian\.org_debian_dists_bookworm-backports_'?\*;/);
    expect(sh.match(/rm -f/g)).toHaveLength(1);
    expect(sh).not.toContain('rm -rf /');
    expect(dropListsScript([])).toBe('true');
  });

  it('the update reads this source alone and cleans no other list', () => {
    expect(restrictedUpdateScript('docker')).toContain('apt-get -q -o Dir::Etc::sourcelist=sources.list.d/docker.sources -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 --error-on=any update');
  });
});

describe('apt_repository: plan (params + host → change)', () => {
  it('a fresh host: the .sources file and the armored key are created (the keyrings folder with it), an update follows', () => {
    const plan = planAptRepository(docker({ update_cache: true }), fresh, env);
    expect(plan.changed).toBe(true);
    expect(plan.action).toBe('create');
    expect(plan.summary).toMatch(
      /^add apt source docker \(create \/etc\/apt\/sources\.list\.d\/docker\.sources .*; write key \/etc\/apt\/keyrings\/docker\.asc \(\d+ bytes armored, sha256 [0-9a-f]{16}…\)\), then apt-get update for docker alone$/,
    );
    expect(plan.diff).toContain('+Signed-By: /etc/apt/keyrings/docker.asc');
    expect(plan.diff).toMatch(/--- \/dev\/null\n\+\+\+ b\/etc\/apt\/keyrings\/docker\.asc\n@@ key @@\n\+key: \d+ bytes armored, sha256 [0-9a-f]{16}…\n/);
    expect(plan.diff).not.toContain('mQINBF');
    expect(plan.undo).toEqual({
      name: 'docker',
      sources: { kind: 'absent', path: '/etc/apt/sources.list.d/docker.sources', created: [] },
      asc: { kind: 'absent', path: '/etc/apt/keyrings/docker.asc', created: ['/etc/apt/keyrings'] },
      gpg: null,
      lists: ['download.docker.com_linux_debian_dists_bookworm_'],
    });
  });

  it('already in place: no change', () => {
    const plan = planAptRepository(docker({ update_cache: true }), { sources: file(SOURCES), asc: file(ARMORED), gpg: absent() }, env);
    expect(plan).toMatchObject({ changed: false, undo: null });
    expect(plan.summary).toMatch(/^apt source docker is as wanted/);
  });

  it('a binary key goes to .gpg, and the armored one the host had is removed (backed up)', () => {
    const p = aptRepositorySchema.parse({ name: 'docker', uris: 'https://download.docker.com/linux/debian', suites: 'bookworm', components: 'stable', key: { file: 'files/docker.gpg' } });
    const plan = planAptRepository({ ...p, resolvedKey: BINARY.toString('base64') }, { sources: file(SOURCES), asc: file(ARMORED), gpg: absent() }, env);
    expect(plan.action).toBe('change');
    expect(plan.diff).toContain('-Signed-By: /etc/apt/keyrings/docker.asc\n+Signed-By: /etc/apt/keyrings/docker.gpg');
    expect(plan.diff).toMatch(/\+key: 8 bytes binary/);
    expect(plan.diff).toMatch(/-key: \d+ bytes armored/);
    expect(plan.undo).toMatchObject({
      sources: { kind: 'file', backup: expect.stringMatching(/^\/var\/lib\/hostsmith\/backups\/R1\/.*\/etc\/apt\/sources\.list\.d\/docker\.sources$/) },
      asc: { kind: 'file', backup: expect.stringMatching(/^\/var\/lib\/hostsmith\/backups\/R1\/.*\/etc\/apt\/keyrings\/docker\.asc$/) },
      gpg: { kind: 'absent', path: '/etc/apt/keyrings/docker.gpg', created: [] },
    });
    expect(plan.summary).toMatch(/remove key \/etc\/apt\/keyrings\/docker\.asc/);
  });

  it('only the key moved: the .sources file is left alone', () => {
    const plan = planAptRepository(docker(), { sources: file(SOURCES), asc: file('-----BEGIN PGP PUBLIC KEY BLOCK-----\nold\n'), gpg: absent() }, env);
    expect(plan.undo).toMatchObject({ sources: null, gpg: null, asc: { kind: 'file' } });
    expect(plan.summary).toMatch(/^update apt source docker \(replace key/);
  });

  it('a key file with the wrong mode: its metadata only', () => {
    const plan = planAptRepository(docker(), { sources: file(SOURCES), asc: file(ARMORED, 0o600), gpg: absent() }, env);
    expect(plan.summary).toContain('mode 0600 → 0644');
    expect(plan.diff).toBeUndefined();
  });

  it('state absent: the file and whichever key is there go, and the lists of what the file named', () => {
    const plan = planAptRepository(aptRepositorySchema.parse({ name: 'docker', state: 'absent' }), { sources: file(SOURCES), asc: file(ARMORED), gpg: absent() }, env);
    expect(plan.action).toBe('remove');
    expect(plan.summary).toMatch(/^remove apt source docker .*, and drop its apt lists$/);
    expect(plan.undo).toMatchObject({ sources: { kind: 'file' }, asc: { kind: 'file' }, gpg: null, lists: ['download.docker.com_linux_debian_dists_bookworm_'] });
    expect(planAptRepository(aptRepositorySchema.parse({ name: 'docker', state: 'absent' }), fresh, env)).toMatchObject({ changed: false });
  });

  it('refuses a key that is not OpenPGP, and a .sources path that is a link', () => {
    expect(() => keyForm(Buffer.from('hello'))).toThrow(/neither an armored OpenPGP public key/);
    expect(keyForm(BINARY)).toBe('gpg');
    expect(() => planAptRepository(docker(), { ...fresh, sources: { kind: 'link', target: '/etc/shadow', missing: [] } }, env)).toThrow(/symbolic link/);
  });

  it('journaled undo data must name its own paths and plain list prefixes', () => {
    const undo = planAptRepository(docker(), fresh, env).undo!;
    expect(aptRepositoryStep.undoMismatch!(docker(), undo as never)).toBeUndefined();
    expect(aptRepositoryStep.undoMismatch!(docker({ name: 'other' }), undo as never)).toMatch(/not other/);
    expect(aptRepositoryStep.undoMismatch!(docker(), { ...undo, lists: ['../../etc/x_'] } as never)).toMatch(/not list-file prefixes/);
    expect(aptRepositoryStep.undoMismatch!(docker(), { ...undo, asc: { kind: 'absent', path: '/etc/shadow', created: [] } } as never)).toMatch(/not the step's/);
    expect(aptRepositoryStep.undoSummary!(undo as never)).toBe(
      'remove /etc/apt/keyrings/docker.asc and the folders the step created (/etc/apt/keyrings); remove /etc/apt/sources.list.d/docker.sources; drop the apt lists of the source unless another source still uses them',
    );
  });

  it('the watchdog script puts back both files, then drops the lists, and is valid sh', () => {
    const undo = planAptRepository(docker(), fresh, env).undo!;
    const sh = aptRepositoryStep.hostRollback!(docker(), undo, { host: 'h', runId: 'R1', step: 'Docker', backupDir: env.backupDir, init: 'systemd' });
    expect(sh.indexOf('docker.asc')).toBeLessThan(sh.indexOf('docker.sources'));
    expect(sh.indexOf('docker.sources')).toBeLessThan(sh.indexOf('apt-get indextargets'));
    expect(sh).toMatch(/exit \$hs_rc$/);
    expect(spawnSync('sh', ['-n'], { input: sh }).status).toBe(0);
  });
});
