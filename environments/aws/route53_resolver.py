"""The service name as Route 53 holds it, asked through the Route 53 API (no DNS packets, so it
works the same against moto in tests and in any network): the record's values and TTL.
Same interface as gameday.resolver.ServiceResolver (lookup / resolve / address).

Route 53's API answers the authoritative record at once; real resolvers may serve the old
value until the TTL they cached runs out, which `resolve()` models by caching for the TTL.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from gameday.resolver import Answer, CachingResolver, ResolveError

ALIAS_TTL_S = 60  # an alias record has no TTL of its own; Route 53 answers with the target's (ALB: 60 s)


class Route53Resolver(CachingResolver):
    def __init__(self, env, *, honour_ttl: bool = True):
        self.env = env
        self.honour_ttl = honour_ttl
        self.server = f"route53:{env.config.aws.hosted_zone_id}"
        self._cache: dict[str, tuple[tuple[str, ...], float]] = {}

    def lookup(self, name: str) -> Answer:
        fqdn = name if name.endswith(".") else name + "."
        try:
            rrs = self.env.observer("route53", "us-east-1").list_resource_record_sets(
                HostedZoneId=self.env.config.aws.hosted_zone_id, StartRecordName=fqdn, StartRecordType="A",
                MaxItems="1")["ResourceRecordSets"]
        except (BotoCoreError, ClientError) as e:
            raise ResolveError(name, self.server, f"{type(e).__name__}: {e}") from None
        if not rrs or rrs[0]["Name"] != fqdn or rrs[0]["Type"] != "A":
            raise ResolveError(name, self.server, "no A record for this name")
        rec = rrs[0]
        if "AliasTarget" in rec:
            return Answer([rec["AliasTarget"]["DNSName"].rstrip(".")], ALIAS_TTL_S)
        return Answer([v["Value"] for v in rec.get("ResourceRecords", [])], int(rec.get("TTL", 0)))
