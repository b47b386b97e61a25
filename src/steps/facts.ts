/** The facts gathered from a host in its first round trip, which steps and templates read. */
export interface Facts {
  os: { id: string; version_id: string; name: string };
  arch: string;
  hostname: string;
  /** The login user. */
  user: string;
  home: string;
  /** Package manager: apt, dnf, yum, apk, or unknown. */
  pkg: string;
  /** Init system: systemd or sysvinit. */
  init: string;
}
