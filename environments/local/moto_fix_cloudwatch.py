"""CloudWatch corrected to AWS inside each moto server: alarm history and state timestamps.

moto keeps an alarm's state but has no DescribeAlarmHistory, starts a new alarm in OK (AWS:
INSUFFICIENT_DATA), resets the state when PutMetricAlarm updates an existing alarm (AWS: "its
state is left unchanged") and has no StateTransitionedTimestamp. Corrected here:

- every state change made in moto (the local alarm evaluator's SetAlarmState, or a customer's)
  is recorded as a StateUpdate history item by moto itself, in the same call: the history is
  moto's own record of what its alarm did, with AWS's HistorySummary ("Alarm updated from OK to
  ALARM") and HistoryData ({"version", "oldState", "newState"} with stateValue, stateReason and
  stateReasonData); a SetAlarmState that leaves the state value as it is records nothing and
  moves StateUpdatedTimestamp only;
- PutMetricAlarm records a ConfigurationUpdate item (created / updated), DeleteAlarms one
  (deleted); the history of a deleted alarm stays readable, as in AWS;
- Action items: the alarm's actions are run by the local evaluator (alarms.py), which tells moto
  through the admin route `cloudwatch_alarm_action` what happened to each action after it ran
  (published, or the error): the item says what really happened, when it happened;
- `DescribeAlarmHistory` answers from that record with AlarmName, AlarmTypes, HistoryItemType,
  StartDate/EndDate, ScanBy, MaxRecords and NextToken;
- `StateTransitionedTimestamp` in DescribeAlarms changes only when the state value changes.

Only moto and the standard library (moto_corrections' rule).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

STATE_UPDATE, ACTION, CONFIGURATION_UPDATE = "StateUpdate", "Action", "ConfigurationUpdate"
HISTORY_ITEM_TYPES = (CONFIGURATION_UPDATE, STATE_UPDATE, ACTION)
METRIC_ALARM, COMPOSITE_ALARM = "MetricAlarm", "CompositeAlarm"
MAX_RECORDS = 100            # DescribeAlarmHistory's MaxRecords: 1..100, default 100
HISTORY_DATA_MAX = 4095      # AlarmHistoryItem.HistoryData's length limit
SUMMARY_MAX = 255            # AlarmHistoryItem.HistorySummary's length limit
# AWS keeps 30 days of history; a local run is shorter, but a runaway must not grow without bound
HISTORY_KEEP = 20_000        # items per (account, region), oldest dropped first


# -- the rules: history items as AWS writes them (pure) ------------------------------------------------------

def _state_json(value: str, reason: str, reason_data: str | None) -> dict:
    out: dict = {"stateValue": value, "stateReason": reason}
    try:
        data = json.loads(reason_data) if reason_data else None
    except ValueError:
        data = None
    if data:  # AWS leaves stateReasonData out when there is none (a SetAlarmState without it)
        out["stateReasonData"] = data
    return out


def state_update_item(name: str, old: tuple[str, str, str | None], new: tuple[str, str, str | None],
                      when: datetime, alarm_type: str = METRIC_ALARM) -> dict:
    """The StateUpdate item of a state change; old/new = (StateValue, StateReason, StateReasonData)."""
    data = {"version": "1.0", "oldState": _state_json(*old), "newState": _state_json(*new)}
    return {"AlarmName": name, "AlarmType": alarm_type, "Timestamp": when, "HistoryItemType": STATE_UPDATE,
            "HistorySummary": f"Alarm updated from {old[0]} to {new[0]}"[:SUMMARY_MAX],
            "HistoryData": _bounded(data)}


def action_item(name: str, action_arn: str, error: str | None, when: datetime, state_updated: datetime | None,
                published_message: str | None = None, alarm_type: str = METRIC_ALARM) -> dict:
    """The Action item of one alarm action that ran (error None) or failed (AWS's wording)."""
    if error is None:
        summary = f"Successfully executed action {action_arn}"
        data: dict = {"actionState": "Succeeded", "notificationResource": action_arn}
        if published_message is not None:
            data["publishedMessage"] = published_message
    else:
        summary = f'Failed to execute action {action_arn}. Received error: "{error}"'
        data = {"actionState": "Failed", "notificationResource": action_arn, "error": error}
    if state_updated is not None:
        data["stateUpdateTimestamp"] = int(_aware(state_updated).timestamp() * 1000)
    return {"AlarmName": name, "AlarmType": alarm_type, "Timestamp": when, "HistoryItemType": ACTION,
            "HistorySummary": summary[:SUMMARY_MAX], "HistoryData": _bounded(data)}


def configuration_item(name: str, change: str, when: datetime, alarm_type: str = METRIC_ALARM) -> dict:
    """The ConfigurationUpdate item of PutMetricAlarm (change "Create"/"Update") or DeleteAlarms ("Delete")."""
    verb = {"Create": "created", "Update": "updated", "Delete": "deleted"}[change]
    return {"AlarmName": name, "AlarmType": alarm_type, "Timestamp": when, "HistoryItemType": CONFIGURATION_UPDATE,
            "HistorySummary": f'Alarm "{name}" {verb}'[:SUMMARY_MAX],
            "HistoryData": _bounded({"version": "1.0", "type": change})}


def _bounded(data: dict) -> str:
    text = json.dumps(data, separators=(",", ":"))
    if len(text) <= HISTORY_DATA_MAX:
        return text
    # a long reason or published message: shorten the biggest string fields, keep the JSON valid
    for key in ("publishedMessage", "newState", "oldState"):
        if key in data and len(text) > HISTORY_DATA_MAX:
            if isinstance(data[key], dict):
                data[key].pop("stateReasonData", None)
            else:
                data[key] = data[key][:max(0, len(data[key]) - (len(text) - HISTORY_DATA_MAX) - 3)] + "..."
            text = json.dumps(data, separators=(",", ":"))
    return text[:HISTORY_DATA_MAX]


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _as_time(v) -> datetime | None:
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return _aware(v)
    if isinstance(v, (int, float)):
        return datetime.fromtimestamp(float(v), tz=timezone.utc)
    return _aware(datetime.fromisoformat(str(v).replace("Z", "+00:00")))


def select_history(items: list[dict], *, alarm_name: str | None = None, alarm_types: list[str] | None = None,
                   item_type: str | None = None, start: datetime | None = None, end: datetime | None = None,
                   scan_by: str | None = None, max_records: int | None = None,
                   next_token: str | None = None) -> tuple[list[dict], str | None]:
    """DescribeAlarmHistory's filters over recorded items (oldest first): (page, NextToken)."""
    if item_type is not None and item_type not in HISTORY_ITEM_TYPES:
        raise ValueError(f"HistoryItemType {item_type!r} is not one of {list(HISTORY_ITEM_TYPES)}")
    if scan_by not in (None, "TimestampDescending", "TimestampAscending"):
        raise ValueError(f"ScanBy {scan_by!r} is not TimestampDescending or TimestampAscending")
    size = MAX_RECORDS if max_records is None else int(max_records)
    if not 1 <= size <= MAX_RECORDS:
        raise ValueError(f"MaxRecords {size} is not within 1..{MAX_RECORDS}")
    types = alarm_types or [METRIC_ALARM]     # AWS: "If you omit this parameter, only metric alarms"
    picked = [i for i in items
              if (alarm_name is None or i["AlarmName"] == alarm_name) and i["AlarmType"] in types
              and (item_type is None or i["HistoryItemType"] == item_type)
              and (start is None or _aware(i["Timestamp"]) >= start) and (end is None or _aware(i["Timestamp"]) <= end)]
    picked.sort(key=lambda i: _aware(i["Timestamp"]), reverse=scan_by != "TimestampAscending")
    offset = 0
    if next_token:
        try:
            offset = int(next_token)
        except ValueError:
            raise ValueError(f"NextToken {next_token!r} is not one this API returned") from None
    page = picked[offset:offset + size]
    return page, (str(offset + size) if offset + size < len(picked) else None)


# -- moto, corrected ----------------------------------------------------------------------------------------------

class _History:
    """Every history item per (account, region), oldest first; moto's server answers on several threads."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], list[dict]] = {}
        self.lock = threading.Lock()

    def add(self, account: str, region: str, item: dict) -> None:
        with self.lock:
            items = self.items.setdefault((account, region), [])
            items.append(item)
            del items[:-HISTORY_KEEP]

    def of(self, account: str, region: str) -> list[dict]:
        with self.lock:
            return list(self.items.get((account, region), []))


HISTORY = _History()


def _alarm_place(alarm) -> tuple[str, str]:
    return alarm.alarm_arn.split(":")[4], alarm.region_name


def _alarm_type(alarm) -> str:
    return COMPOSITE_ALARM if getattr(alarm, "rule", None) else METRIC_ALARM


def _patch_alarm(models) -> None:
    Alarm = models.Alarm
    init, update_state = Alarm.__init__, Alarm.update_state

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        # PutMetricAlarm: "the alarm state is immediately set to INSUFFICIENT_DATA"
        self.state_value = "INSUFFICIENT_DATA"
        self.state_transitioned_timestamp = self.state_updated_timestamp

    def update_state_recorded(self, reason, reason_data, state_value):
        old = (self.state_value, self.state_reason, self.state_reason_data)
        update_state(self, reason, reason_data, state_value)
        if state_value == old[0]:
            return
        self.state_transitioned_timestamp = self.state_updated_timestamp
        HISTORY.add(*_alarm_place(self), state_update_item(
            self.name, old, (state_value, reason, reason_data), self.state_updated_timestamp, _alarm_type(self)))

    Alarm.__init__ = __init__
    Alarm.update_state = update_state_recorded


def _patch_backend(models) -> None:
    Backend = models.CloudWatchBackend
    put_metric_alarm, delete_alarms = Backend.put_metric_alarm, Backend.delete_alarms

    def put_metric_alarm_kept(self, name, *args, **kwargs):
        old = self.alarms.get(name)
        alarm = put_metric_alarm(self, name, *args, **kwargs)
        if old is not None:  # an update: "its state is left unchanged"
            for attr in ("state_value", "state_reason", "state_reason_data", "state_updated_timestamp",
                         "state_transitioned_timestamp"):
                setattr(alarm, attr, getattr(old, attr, getattr(alarm, attr)))
        HISTORY.add(self.account_id, self.region_name, configuration_item(
            name, "Update" if old is not None else "Create", models.utcnow(), _alarm_type(alarm)))
        return alarm

    def delete_alarms_recorded(self, alarm_names):
        gone = [(n, _alarm_type(self.alarms[n])) for n in alarm_names if n in self.alarms]
        out = delete_alarms(self, alarm_names)
        for name, kind in gone:
            HISTORY.add(self.account_id, self.region_name, configuration_item(name, "Delete", models.utcnow(), kind))
        return out

    Backend.put_metric_alarm = put_metric_alarm_kept
    Backend.delete_alarms = delete_alarms_recorded


def _describe_alarm_history(self):
    from moto.cloudwatch.exceptions import InvalidParameterValue
    from moto.core.responses import ActionResult

    backend = self.cloudwatch_backend
    try:
        page, token = select_history(
            HISTORY.of(backend.account_id, backend.region_name),
            alarm_name=self._get_param("AlarmName"), alarm_types=self._get_param("AlarmTypes") or None,
            item_type=self._get_param("HistoryItemType"), start=_as_time(self._get_param("StartDate")),
            end=_as_time(self._get_param("EndDate")), scan_by=self._get_param("ScanBy"),
            max_records=self._get_param("MaxRecords"), next_token=self._get_param("NextToken"))
    except ValueError as e:
        raise InvalidParameterValue(str(e)) from None
    result: dict = {"AlarmHistoryItems": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def record_action(body: dict) -> dict:
    """Admin route `cloudwatch_alarm_action`: the evaluator ran (or failed to run) one alarm action.
    Body: region, alarm_name, action (ARN), error (None = succeeded), published_message,
    account_id (default: moto's). Answers the item recorded."""
    from moto.cloudwatch.models import cloudwatch_backends
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.core.utils import utcnow

    backend = cloudwatch_backends[body.get("account_id") or DEFAULT_ACCOUNT_ID][body["region"]]
    name = body["alarm_name"]
    alarm = backend.alarms.get(name)
    if alarm is None:
        raise KeyError(f"no alarm {name!r} in {body['region']}")
    item = action_item(name, str(body["action"]), body.get("error"), utcnow(),
                       getattr(alarm, "state_updated_timestamp", None), body.get("published_message"),
                       _alarm_type(alarm))
    HISTORY.add(backend.account_id, backend.region_name, item)
    return {**item, "Timestamp": _aware(item["Timestamp"]).isoformat()}


def install(admin) -> None:
    from moto.cloudwatch import models
    from moto.cloudwatch.responses import CloudWatchResponse

    _patch_alarm(models)
    _patch_backend(models)
    CloudWatchResponse.describe_alarm_history = _describe_alarm_history
    admin.route("cloudwatch_alarm_action", record_action)
