#!/usr/bin/env bash
# Build the Neo4j Community 5.26 test launcher (needs JDK 17 and mvn; downloads from Maven Central once).
# Idempotent and quick when already built: skips Maven when target/ is newer than the sources.
# Output: target/classes + target/classpath.txt; run with
#   java -cp "target/classes:$(cat target/classpath.txt)" bluegreen.harness.HarnessMain [port] [password]
set -euo pipefail
cd "$(dirname "$0")"
stamp=target/classpath.txt
if [[ -f "$stamp" && -f target/classes/bluegreen/harness/HarnessMain.class \
      && -z "$(find pom.xml src -newer "$stamp" -print -quit)" ]]; then
    echo "neo4j harness launcher: up to date"
    exit 0
fi
mvn -q -B ${MAVEN_REPO_LOCAL:+-Dmaven.repo.local="$MAVEN_REPO_LOCAL"} compile
touch "$stamp"
echo "neo4j harness launcher: built ($(tr ':' '\n' < "$stamp" | wc -l) jars on the classpath)"
