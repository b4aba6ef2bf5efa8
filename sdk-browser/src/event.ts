/** The event envelope as the collector takes it (collector/openapi.json, POST /v1/events). */

export type PrivacyLevel = "standard" | "sensitive" | "pii";

export interface DeviceInfo {
  platform?: string;
  browser?: string;
  version?: string;
  screen_resolution?: string;
  /** IANA zone: the learner's local calendar for streaks and daily stats. */
  timezone?: string;
  user_agent?: string;
}

export interface EventContext {
  page_url?: string;
  referrer?: string;
  course_id?: string | number;
  class_id?: string | number;
  assignment_id?: string | number;
  teacher_id?: string | number;
  sequence_id?: string | number;
}

export type Properties = Record<string, unknown>;

export interface LearnstreamEvent {
  event_id: string;
  event_type: string;
  /** Event time, ISO 8601 with offset. */
  timestamp: string;
  properties: Properties;
  user_id?: string | number;
  session_id?: string | number;
  organization_id?: string | number;
  device_info?: DeviceInfo;
  context?: EventContext;
  privacy_level?: PrivacyLevel;
}

/** One event the collector refused inside an accepted batch (202). */
export interface Rejection {
  index: number;
  event_id: string | null;
  errors: { field: string; message: string }[];
}
