/** Values the global setup (test/hosts/global-setup.ts) hands to every test file via provide/inject. */
declare module 'vitest' {
  interface ProvidedContext {
    /** true when sandbox hosts can be started on this machine (root, debootstrap, … and the rootfs is built) */
    hostsAvailable: boolean;
    /** why they cannot ('' when they can) */
    hostsReason: string;
    /** true when systemd sandbox hosts (systemd-nspawn) can be started too */
    systemdAvailable: boolean;
    /** why they cannot ('' when they can) */
    systemdReason: string;
  }
}

export {};
