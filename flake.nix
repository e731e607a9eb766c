# talix as a Nix flake: the package (built from the committed Cargo.lock), an app, a dev shell
# with the programs talix drives (talosctl, kubectl, age) and the Rust toolchain, and checks that
# run the test suite and rustfmt.
#
# Our CI machines have no internet, so this file is only parsed there
# (`nix-instantiate --parse flake.nix`, see .ci/run and tests/cli_ecosystem.rs); full evaluation
# (`nix flake check`, `nix build`) needs a machine that can fetch nixpkgs. The first such run
# writes flake.lock; commit it.
{
  description = "talix: Talos cluster bootstrap as a reproducible, content-addressed workflow";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      # talix needs Linux (flock, tmpfs checks, /proc); the simulator binds 127.0.0.0/8.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Programs the tests run (age, age-keygen, ssh-keygen, kubectl, jq, bc, man, script, kill,
      # unshare, bash, zsh, fish); the same list as .ci/run installs from Debian.
      testTools =
        pkgs: with pkgs; [
          age
          openssh
          kubectl
          jq
          bc
          man-db
          util-linux
          bash
          zsh
          fish
          coreutils
          gnused
        ];

      talixFor =
        pkgs:
        { doCheck }:
        pkgs.rustPlatform.buildRustPackage {
          pname = "talix";
          version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package.version;
          src = pkgs.lib.cleanSourceWith {
            src = ./.;
            # Not the local store, built artefacts or clusters' configs.
            filter =
              path: type:
              let
                rel = pkgs.lib.removePrefix (toString ./. + "/") (toString path);
              in
              !(builtins.elem rel [
                "target"
                "clusters"
                "result"
              ])
              && !(pkgs.lib.hasPrefix "store/v" rel);
          };
          cargoLock.lockFile = ./Cargo.lock;

          nativeBuildInputs = [ pkgs.installShellFiles ];

          inherit doCheck;
          nativeCheckInputs = testTools pkgs;
          # The test harness pins PATH to /usr/bin:/bin (no stray talosctl); the build sandbox
          # has neither, so point it at the check inputs instead.
          postPatch = pkgs.lib.optionalString doCheck ''
            for f in $(grep -rl '"/usr/bin:/bin"' tests); do
              substituteInPlace "$f" --replace-quiet '"/usr/bin:/bin"' '"${pkgs.lib.makeBinPath (testTools pkgs)}"'
            done
          '';
          # Tests and benchmarks only ever touch loopback.
          env.TALIX_ALLOW_NETS = "127.0.0.0/8";
          # This test runs the hand-written runbook from the session's shared/bench/, outside
          # the repository, so the source Nix builds from does not have it.
          checkFlags = [ "--skip=runbook_completes_against_simulated_nodes" ];

          # Completions and man pages come from the binary's own clap types.
          postInstall = ''
            installShellCompletion --cmd talix \
              --bash <($out/bin/talix completions bash) \
              --fish <($out/bin/talix completions fish) \
              --zsh <($out/bin/talix completions zsh)
            mkdir -p man-pages
            $out/bin/talix man --out-dir man-pages > /dev/null
            installManPage man-pages/*.1
          '';

          meta = {
            description = "Talos cluster bootstrap as a reproducible, content-addressed workflow";
            mainProgram = "talix";
            platforms = pkgs.lib.platforms.linux;
          };
        };
    in
    {
      packages = forAllSystems (pkgs: rec {
        # `nix build`: the binaries, completions and man pages (tests run in `nix flake check`).
        talix = talixFor pkgs { doCheck = false; };
        default = talix;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.talix}/bin/talix";
          meta.description = "the talix command line";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages =
            with pkgs;
            [
              cargo
              rustc
              clippy
              rustfmt
              rust-analyzer
              talosctl
              kubectl
              age
              nix
            ]
            ++ testTools pkgs;
          RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
          TALIX_ALLOW_NETS = "127.0.0.0/8";
        };
      });

      checks = forAllSystems (pkgs: {
        # `cargo test` (the README's test command, --locked via the vendored Cargo.lock).
        tests = talixFor pkgs { doCheck = true; };
        fmt =
          pkgs.runCommand "talix-fmt"
            {
              nativeBuildInputs = [
                pkgs.cargo
                pkgs.rustfmt
              ];
            }
            ''
              export HOME=$TMPDIR
              cd ${./.}
              cargo fmt --all --check
              touch $out
            '';
      });
    };
}
