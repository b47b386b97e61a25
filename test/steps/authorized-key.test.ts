import { describe, expect, it } from 'vitest';
import {
  accountScript,
  authorizedKeySchema,
  authorizedKeyStep,
  editKeys,
  parseAccount,
  parseKeyLine,
  planAuthorizedKey,
  type AuthorizedKeyState,
} from '../../src/steps/authorized_key/authorized_key.js';
import type { PathState } from '../../src/steps/file-state.js';
import { stepTypes } from '../../src/steps/registry.js';

const K1 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPken9HDuEaIlFtUhVwfTd2D/rcqidGfwsQtFjseGvfB k1@test';
const K2 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILKI2XaiEx5bXmmmObv1YN937iWnn01KLDQEIR0ZIPeQ k2@test';
const K3 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGeXlRcaCNrftFB35kSAyIVnCBmaxCrOrhFA6BCkgk58 k3@test';
/** K1's key with another comment and options: the same key. */
const K1_OTHER = `no-agent-forwarding ${K1.replace('k1@test', 'laptop')}`;
const FILE = '/home/alice/.ssh/authorized_keys';

const env = { runId: 'R1', step: 'Keys', backupDir: '/var/lib/hostsmith/backups/R1' };
const params = (o: Record<string, unknown> = {}) => authorizedKeySchema.parse({ user: 'alice', key: K1, ...o });
const account = { uid: 1001, gid: 1001, group: 'alice', home: '/home/alice' };
const file = (content: string, mode = 0o600): PathState => ({ kind: 'file', content: Buffer.from(content), mode, owner: 'alice', group: 'alice', missing: [] });
const st = (f: PathState): AuthorizedKeyState => ({ user: account, file: f });

describe('authorized_key: params → footprint', () => {
  const rows: Array<[Record<string, unknown>, { reads: string[]; writes: string[] }]> = [
    [{}, { reads: ['user:alice', 'path:/etc/passwd', `path:${FILE}`], writes: [`path:${FILE}`] }],
    [{ user: 'root' }, { reads: ['user:root', 'path:/etc/passwd', 'path:/root/.ssh/authorized_keys'], writes: ['path:/root/.ssh/authorized_keys'] }],
    [{ path: '/etc/ssh/keys/alice' }, { reads: ['user:alice', 'path:/etc/passwd', 'path:/etc/ssh/keys/alice'], writes: ['path:/etc/ssh/keys/alice'] }],
  ];
  it.each(rows)('%j', (o, want) => expect(stepTypes.authorized_key!.footprint(params(o))).toEqual(want));
});

describe('authorized_key: params are checked before any host is read', () => {
  it.each([
    [{ key: undefined }, /either key or keys/],
    [{ keys: [K1] }, /either key or keys/],
    [{ key: 'ssh-ed25519 not-base64!' }, /not a public key line/],
    [{ key: K1.replace('AAAAC3Nza', 'AAAAB3Nza') }, /is not a ssh-ed25519 key/],
    [{ key: undefined, keys: [] }, /at least one key/],
    [{ key: undefined, keys: [`${K1}\n${K2}`] }, /one key per list item/],
    [{ key: '# only a comment' }, /holds no key line/],
    [{ state: 'absent', exclusive: true }, /exclusive is only for state: present/],
    [{ options: 'no-pty from=x' }, /one field/],
    [{ user: '-oops' }, /invalid user name/],
    [{ path: 'keys' }, /absolute/],
  ])('%j is refused', (o, why) => {
    const r = authorizedKeySchema.safeParse({ user: 'alice', key: K1, ...o });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(why);
  });
  it('key may hold several lines, with blanks and comments between', () => {
    expect(editKeys(null, params({ key: `${K1}\n\n# second\n${K2}\n` })).added).toHaveLength(2);
  });
});

describe('authorized_key: key lines', () => {
  it('reads options (quoted blanks included), type, key and comment', () => {
    expect(parseKeyLine(`from="10.0.0.0/8,192.168.0.1",command="echo a b" ${K2}`)).toEqual({
      options: 'from="10.0.0.0/8,192.168.0.1",command="echo a b"',
      type: 'ssh-ed25519',
      blob: 'AAAAC3NzaC1lZDI1NTE5AAAAILKI2XaiEx5bXmmmObv1YN937iWnn01KLDQEIR0ZIPeQ',
      comment: 'k2@test',
    });
    expect(parseKeyLine('# a comment')).toBeUndefined();
    expect(parseKeyLine('   ')).toBeUndefined();
    expect(parseKeyLine('garbage here')).toBeUndefined();
  });
});

describe('authorized_key: the file edit', () => {
  const rows: Array<[string, Record<string, unknown>, string | null, string | 'same']> = [
    ['a new file', { key: `${K1}\n${K2}` }, null, `${K1}\n${K2}\n`],
    ['a key there under another comment and options is there (no options given)', {}, `${K1_OTHER}\n`, 'same'],
    ['appends after what is there, keeping it byte for byte', { key: K2 }, `# team\n${K1}`, `# team\n${K1}\n${K2}\n`],
    ['with options, the whole line must match: comment and options rewritten in place', { options: 'no-pty' }, `# x\n${K1_OTHER}\n${K3}\n`, `# x\nno-pty ${K1}\n${K3}\n`],
    ['with options, an exact line stays', { options: 'from="10.0.0.0/8",no-pty' }, `from="10.0.0.0/8",no-pty ${K1}\n`, 'same'],
    ['with options, a later line of the same key goes (sshd would try it too)', { options: 'no-pty' }, `no-pty ${K1}\n${K1}\n`, `no-pty ${K1}\n`],
    ['options: "" takes a key\'s options away', { options: '' }, `no-pty ${K1}\n`, `${K1}\n`],
    ['exclusive drops other keys and junk, keeps comments and blanks', { exclusive: true, key: K2 }, `# team\n${K1}\n\nnot a key\n${K2}\n`, `# team\n\n${K2}\n`],
    ['exclusive with the keys there and nothing else: unchanged', { exclusive: true, key: `${K1}\n${K2}` }, `${K2}\n# c\n${K1}\n`, 'same'],
    ['absent removes every line of the key', { state: 'absent' }, `${K1_OTHER}\n${K2}\n${K1}\n`, `${K2}\n`],
    ['absent, not there: unchanged', { state: 'absent' }, `${K2}\n`, 'same'],
    ['absent, the last key: the file stays, empty', { state: 'absent' }, `${K1}\n`, ''],
  ];
  it.each(rows)('%s', (_what, o, text, want) => {
    const e = editKeys(text, params(o));
    expect(e.text).toBe(want === 'same' ? text : want);
  });
});

describe('authorized_key: (params, state) → plan', () => {
  it("creates the file 0600 and ~/.ssh 0700, both the user's, and undo removes both", () => {
    const plan = planAuthorizedKey(params({ key: undefined, keys: [K1, K2] }), st({ kind: 'absent', missing: ['/home/alice/.ssh'] }), env);
    expect(plan).toMatchObject({
      changed: true,
      action: 'create',
      summary: `create alice's ${FILE} (0600 alice:alice, and folder /home/alice/.ssh (0700 alice:alice)): add 2 keys (ssh-ed25519 k1@test, ssh-ed25519 k2@test)`,
      undo: { user: 'alice', file: { kind: 'absent', path: FILE, created: ['/home/alice/.ssh'] } },
    });
    expect(plan.diff).toContain(`+${K1}\n+${K2}`);
    expect(authorizedKeyStep.wrote!(params(), plan.undo)).toEqual(['path:/home/alice/.ssh']);
    expect(authorizedKeyStep.undoSummary!(plan.undo as never)).toBe(`remove ${FILE} and the folders the step created (/home/alice/.ssh) (authorized keys of alice)`);
  });

  it('adds to an existing file from a root-only backup, leaving its metadata', () => {
    const plan = planAuthorizedKey(params({ key: K2 }), st(file(`${K1}\n`, 0o644)), env);
    expect(plan.summary).toBe(`update alice's ${FILE}: add 1 key (ssh-ed25519 k2@test)`);
    expect(plan.diff).toMatch(/^\+ssh-ed25519 \S+ k2@test$/m);
    expect(plan.undo?.file).toMatchObject({ kind: 'file', path: FILE, mode: 0o644, owner: 'alice' });
    expect((plan.undo!.file as { backup: string }).backup).toMatch(/^\/var\/lib\/hostsmith\/backups\/R1\/Keys-[0-9a-f]{8}\/home\/alice\/\.ssh\/authorized_keys$/);
  });

  it.each([
    ['present and there', {}, `${K1_OTHER}\n`, `alice's ${FILE} holds the 1 key as wanted`],
    ['exclusive and alone', { exclusive: true }, `${K1}\n`, `alice's ${FILE} holds the 1 key as wanted (and no other)`],
    ['absent and not there', { state: 'absent', key: `${K2}\n${K3}` }, `${K1}\n`, `none of the 2 keys are in alice's ${FILE}`],
  ])('unchanged: %s', (_what, o, text, summary) => {
    expect(planAuthorizedKey(params(o), st(file(text)), env)).toEqual({ changed: false, summary, undo: null });
  });

  it('absent with no file is unchanged', () => {
    expect(planAuthorizedKey(params({ state: 'absent' }), st({ kind: 'absent', missing: ['/home/alice/.ssh'] }), env)).toMatchObject({ changed: false, summary: `${FILE} does not exist` });
  });

  it('says what changes: updated, removed, dropped lines', () => {
    const plan = planAuthorizedKey(params({ key: K1, options: 'no-pty', exclusive: true }), st(file(`${K1}\n${K2}\njunk\n`)), env);
    expect(plan.summary).toBe(`update alice's ${FILE}: update 1 key (ssh-ed25519 k1@test), remove 1 key (ssh-ed25519 k2@test), remove 1 line that holds no key`);
    expect(plan.action).toBe('change');
    expect(planAuthorizedKey(params({ state: 'absent' }), st(file(`${K1}\n`)), env).action).toBe('remove');
  });

  it('refuses a file that is a symbolic link (one the user may have planted), naming it and where it points', () => {
    expect(() => planAuthorizedKey(params(), st({ kind: 'link', target: '/etc/shadow', missing: [] }), env)).toThrow(
      `${FILE} is a symbolic link (to /etc/shadow); hostsmith does not read or write keys through a link`,
    );
  });

  it('does not create a missing home', () => {
    expect(() => planAuthorizedKey(params(), st({ kind: 'absent', missing: ['/home/alice', '/home/alice/.ssh'] }), env)).toThrow(/the home \/home\/alice of user alice does not exist/);
  });

  it('a given path: missing folders are made as the file machinery makes them (root 0755), named in the summary', () => {
    const plan = planAuthorizedKey(params({ path: '/etc/ssh/keys/alice' }), st({ kind: 'absent', missing: ['/etc/ssh/keys'] }), env);
    expect(plan.summary).toBe(`create alice's /etc/ssh/keys/alice (0600 alice:alice, and folder /etc/ssh/keys): add 1 key (ssh-ed25519 k1@test)`);
    expect(plan.undo).toEqual({ user: 'alice', file: { kind: 'absent', path: '/etc/ssh/keys/alice', created: ['/etc/ssh/keys'] } });
  });
});

describe('authorized_key: reading the user', () => {
  it('from getent: uid, gid, primary group and home', () => {
    expect(parseAccount('alice:x:1001:1001:Alice:/home/alice:/bin/bash\nalice\n', 'alice')).toEqual(account);
    expect(accountScript('alice')).toContain('getent passwd alice');
  });
  it('a user that does not exist is a clear error', () => {
    expect(() => parseAccount('nouser\n', 'alice')).toThrow('user alice does not exist on this host: create it first (a user step before this one)');
  });
});

describe('authorized_key: undo data', () => {
  const undo = { user: 'alice', file: { kind: 'absent', path: FILE, created: ['/home/alice/.ssh'] } };
  it('takes its own', () => expect(authorizedKeyStep.undoMismatch!(params(), undo)).toBeUndefined());
  it.each([
    [{ ...undo, user: 'bob' }, /for user "bob"/],
    [{ ...undo, file: { kind: 'file', path: '/etc/shadow', backup: '/var/lib/hostsmith/backups/R/x/etc/shadow' } }, /not an authorized_keys file/],
    [{ ...undo, file: { kind: 'absent', path: FILE, created: ['/etc'] } }, /not a folder above/],
    [{ ...undo, file: { kind: 'file', path: FILE, backup: '/tmp/evil' } }, /not in a hostsmith backup folder/],
    [{ user: 'alice' }, /names no file/],
  ])('refuses %j', (u, why) => expect(authorizedKeyStep.undoMismatch!(params(), u)).toMatch(why));
  it('with a given path, the undo data must name that path', () => {
    expect(authorizedKeyStep.undoMismatch!(params({ path: '/etc/ssh/keys/alice' }), undo)).toMatch(/not the step's \/etc\/ssh\/keys\/alice/);
  });
});
