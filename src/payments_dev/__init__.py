"""Development tooling (the dev extra): local stack and supervisor, embedded
Postgres, bench, load generator, soak. The top layer: never imported by a service."""
