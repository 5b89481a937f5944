# The gantry image: the one binary (controller, agent, control plane) on
# nothing. No base image can be pulled here, so scripts/build-gantry-image
# prepares the context: rootfs/ holds the binary and exactly the shared
# libraries it links (with their loader), copied from this machine.
#
#   scripts/build-gantry-image            # release build, tag gantry:<version>
FROM scratch
COPY rootfs/ /
LABEL dev.gantry.project=gantry
# The controller needs no privilege; the agent needs the Docker socket,
# which its DaemonSet mounts (and runs as root to reach).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/gantry"]
CMD ["--help"]
