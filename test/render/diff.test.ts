import { describe, expect, it } from 'vitest';
import { unifiedDiff } from '../../src/render/diff.js';

describe('unifiedDiff', () => {
  it('is empty when nothing changes', () => {
    expect(unifiedDiff('/etc/motd', 'same\n', 'same\n')).toBe('');
    expect(unifiedDiff('/etc/motd', Buffer.from('same\n'), 'same\n')).toBe('');
    expect(unifiedDiff('/etc/motd', null, null)).toBe('');
  });

  it('shows a change with a/ and b/ labels', () => {
    expect(unifiedDiff('/etc/motd', 'one\ntwo\nthree\n', 'one\n2\nthree\n')).toBe(['--- a/etc/motd', '+++ b/etc/motd', '@@ -1,3 +1,3 @@', ' one', '-two', '+2', ' three', ''].join('\n'));
  });

  it('uses /dev/null for a file that is created or removed', () => {
    expect(unifiedDiff('/etc/x', null, 'new\n')).toBe(['--- /dev/null', '+++ b/etc/x', '@@ -0,0 +1,1 @@', '+new', ''].join('\n'));
    expect(unifiedDiff('/etc/x', Buffer.from('old\n'), null)).toBe(['--- a/etc/x', '+++ /dev/null', '@@ -1,1 +0,0 @@', '-old', ''].join('\n'));
  });

  it('marks a missing final newline', () => {
    expect(unifiedDiff('f', 'a\n', 'a')).toContain('\\ No newline at end of file');
  });

  it('says binary files differ for NUL bytes or invalid UTF-8', () => {
    expect(unifiedDiff('/bin/x', Buffer.from([0x7f, 0x45, 0x00, 0x01]), Buffer.from([0x7f, 0x45, 0x00, 0x02]))).toBe('Binary files a/bin/x and b/bin/x differ\n');
    expect(unifiedDiff('/x.dat', null, Buffer.from([0xff, 0xfe, 0x41]))).toBe('Binary files /dev/null and b/x.dat differ\n');
    expect(unifiedDiff('/x.txt', 'text\n', Buffer.from([0xc3, 0x28]))).toBe('Binary files a/x.txt and b/x.txt differ\n');
  });

  it('treats UTF-8 as text', () => {
    expect(unifiedDiff('/x', Buffer.from('héllo\n'), Buffer.from('hällo\n'))).toContain('+hällo');
  });
});
