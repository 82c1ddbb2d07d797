# Prometheus from Debian's package on the local base, standing in for the official prom/prometheus image in the
# stack tests (no image registry is reachable there). Same contract as that image for deploy/docker-compose.yaml:
# the entrypoint is the prometheus binary (the compose file's `command:` gives its other flags), the config is
# read from /etc/prometheus/prometheus.yml, and with no --storage.tsdb.path given the data goes to /prometheus/data
# (the official image's `data/` under its working directory /prometheus, the compose file's volume), not as root.
# Debian's build defaults to /var/lib/prometheus/metrics2/ instead, hence the flag in the entrypoint.
ARG BASE
FROM ${BASE}
# policy-rc.d: the package's scripts must not start the service inside the build.
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
    && install -d -o nobody -g nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus", "--storage.tsdb.path=/prometheus/data"]
CMD ["--config.file=/etc/prometheus/prometheus.yml"]
