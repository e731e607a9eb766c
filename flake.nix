# Placeholder: the Nix flake (package, dev shell with talosctl/kubectl/age) is filled by a later
# issue. `nix build` is not wired up yet.
{
  description = "talix: Talos cluster bootstrap as a reproducible, content-addressed workflow";
  outputs = { self }: { };
}
