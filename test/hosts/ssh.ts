// The harness lives in the product (`hostsmith test` starts the same hosts); the tests import it from here.
export * from '../../src/sandbox/ssh.js';
