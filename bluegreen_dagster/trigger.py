"""Load one snapshot from outside, through the Dagster webserver's GraphQL API (`dagster-graphql` client).

What the snapshot sensor does in-process, done remotely: register the snapshot's dynamic partition
(`addDynamicPartition`; an existing one is fine), then submit a `load_snapshot` run tagged with the partition and
the customer. The `customer` tag is what the instance's run queue limits to one run per customer, so a triggered
run queues behind the customer's other runs like a sensor run. Runs go through the queue and the daemon.

This is for programs on a machine that reaches the webserver but not the instance's storage. The CLI's
`bluegreen load` / `bluegreen trigger` use the instance directly instead (cli.py `cmd_load`): that needs no
webserver, and it follows the run's progress in the instance's event log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from gql import Client, GraphQLRequest, gql
from gql.transport.requests import RequestsHTTPTransport
from requests.auth import HTTPBasicAuth

from bluegreen_dagster.names import partition_key, validate_customer, validate_timestamp
from bluegreen_dagster.records import CUSTOMER_TAG, LOAD_SNAPSHOT_JOB, PARTITION_TAG, SNAPSHOTS_PARTITIONS_NAME

FINISHED = ("SUCCESS", "FAILURE", "CANCELED")

_REPOSITORIES = gql("""
query BluegreenRepositories {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
    ... on PythonError { message }
  }
}
""")

_ADD_PARTITION = gql("""
mutation BluegreenAddPartition($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on DuplicateDynamicPartitionError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
""")


class TriggerError(RuntimeError):
    """The webserver refused or could not be reached; the message says which and what to check."""


@dataclass(frozen=True)
class Triggered:
    run_id: str
    partition: str
    partition_added: bool      # False when the partition existed already (sensor or an earlier trigger)
    location: str
    repository: str


class SnapshotTrigger:
    """A connection to one Dagster webserver, e.g. `SnapshotTrigger("http://127.0.0.1:3000")`.

    `headers` go with every request (e.g. the Authorization a reverse proxy in front of the UI expects); a
    user:password in the URL becomes HTTP basic auth and is left out of every message.
    """

    def __init__(self, webserver_url: str, *, headers: dict[str, str] | None = None, timeout: int = 60):
        parts = urlsplit(webserver_url if "://" in webserver_url else f"http://{webserver_url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TriggerError("the webserver URL is not http(s)://host[:port][/prefix]")
        prefix = parts.path.rstrip("/")
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        self.url = f"{parts.scheme}://{host}{prefix}"
        auth = HTTPBasicAuth(unquote(parts.username), unquote(parts.password or "")) if parts.username else None
        # One transport for both clients: the Dagster client for runs, a plain gql client for the partition
        # mutation, which the Dagster client has no method for.
        self._transport = RequestsHTTPTransport(url=f"{self.url}/graphql", use_json=True, timeout=timeout,
                                                headers=headers, auth=auth)
        self.dagster = DagsterGraphQLClient(parts.hostname, port_number=parts.port, use_https=parts.scheme == "https",
                                            transport=self._transport, path_prefix=prefix)
        self._gql = Client(transport=self._transport)

    def _execute(self, document, variables: dict | None = None) -> dict:
        try:
            return self._gql.execute(GraphQLRequest(document, variable_values=variables))
        except Exception as exc:  # requests' connection errors, HTTP errors, GraphQL errors
            raise TriggerError(f"Dagster webserver at {self.url} did not answer the request: "
                               f"{type(exc).__name__}: {exc}. Is `dagster-webserver` running there?") from None

    def _repository_with_job(self) -> tuple[str, str]:
        result = self._execute(_REPOSITORIES)["repositoriesOrError"]
        if result["__typename"] != "RepositoryConnection":
            raise TriggerError(f"Dagster webserver at {self.url}: {result.get('message', result['__typename'])}")
        found = [(repo["location"]["name"], repo["name"]) for repo in result["nodes"]
                 if any(job["name"] == LOAD_SNAPSHOT_JOB for job in repo["jobs"])]
        if len(found) != 1:
            where = "no code location" if not found else f"{len(found)} code locations ({found})"
            raise TriggerError(f"Dagster webserver at {self.url}: {where} has the job {LOAD_SNAPSHOT_JOB}; "
                               "start it with -w workspace.yaml of this project")
        return found[0]

    def register(self, customer: str, timestamp: str | int, location: str, repository: str) -> bool:
        """Add the snapshot's partition; True if added, False if it existed."""
        key = partition_key(customer, timestamp)
        answer = self._execute(_ADD_PARTITION, {
            "selector": {"repositoryLocationName": location, "repositoryName": repository},
            "name": SNAPSHOTS_PARTITIONS_NAME, "key": key})["addDynamicPartition"]
        kind = answer["__typename"]
        if kind == "AddDynamicPartitionSuccess":
            return True
        if kind == "DuplicateDynamicPartitionError":
            return False
        raise TriggerError(f"adding partition {key} was refused ({kind}): {answer.get('message', '')}")

    def load(self, customer: str, timestamp: str | int) -> Triggered:
        """Register the snapshot's partition and submit its `load_snapshot` run; returns the run's id."""
        validate_customer(customer)
        validate_timestamp(str(timestamp))
        key = partition_key(customer, timestamp)
        location, repository = self._repository_with_job()
        added = self.register(customer, timestamp, location, repository)
        try:
            run_id = self.dagster.submit_job_execution(
                LOAD_SNAPSHOT_JOB, repository_location_name=location, repository_name=repository,
                tags={PARTITION_TAG: key, CUSTOMER_TAG: customer})
        except DagsterGraphQLClientError as exc:
            raise TriggerError(f"submitting {LOAD_SNAPSHOT_JOB} for {key} to {self.url} failed: {exc}") from None
        return Triggered(run_id=run_id, partition=key, partition_added=added, location=location,
                         repository=repository)

    def run_status(self, run_id: str) -> str:
        """The run's status name (QUEUED, STARTED, SUCCESS, FAILURE, ...)."""
        try:
            return self.dagster.get_run_status(run_id).value
        except DagsterGraphQLClientError as exc:
            raise TriggerError(f"reading run {run_id} from {self.url} failed: {exc}") from None


    def wait(self, run_id: str, timeout: float = 3600, poll_seconds: float = 2) -> str:
        """Poll until the run ends; its final status (SUCCESS, FAILURE or CANCELED). TriggerError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.run_status(run_id)
            if status in FINISHED:
                return status
            if time.monotonic() > deadline:
                raise TriggerError(f"run {run_id} is still {status} after {timeout:g}s; see {self.url}/runs/{run_id}")
            time.sleep(poll_seconds)


def trigger_load(webserver_url: str, customer: str, timestamp: str | int, *,
                 headers: dict[str, str] | None = None) -> Triggered:
    """One call: `trigger_load("http://127.0.0.1:3000", "acme-corp", 1767741527).run_id`."""
    return SnapshotTrigger(webserver_url, headers=headers).load(customer, timestamp)
