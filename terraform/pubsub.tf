# New objects in the data bucket -> Pub/Sub -> the retraining watcher.

data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

resource "google_pubsub_topic" "data_events" {
  project                    = var.project_id
  name                       = "${var.name}-data-events"
  kms_key_name               = var.kms_key_name
  message_retention_duration = "86400s"
  labels                     = var.labels

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

# Cloud Storage publishes notifications as its project service agent.
resource "google_pubsub_topic_iam_member" "gcs_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.data_events.id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_notification" "data_finalize" {
  bucket             = module.bucket_data.name
  topic              = google_pubsub_topic.data_events.id
  payload_format     = "JSON_API_V1"
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = var.data_notification_prefix == "" ? null : var.data_notification_prefix
  custom_attributes = {
    source = "${var.name}-data"
  }

  # GCS checks that it may publish when the notification is created.
  depends_on = [google_pubsub_topic_iam_member.gcs_publisher]
}

resource "google_pubsub_topic" "dead_letter" {
  project                    = var.project_id
  name                       = "${var.name}-data-events-dead-letter"
  kms_key_name               = var.kms_key_name
  message_retention_duration = "604800s"
  labels                     = var.labels

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

# CONTRACTS.md (agreed with the watcher): ack deadline 60 s, retry backoff
# 10 s..600 s, 10 delivery attempts before dead-lettering, 7 days' retention.
# docs/terraform.md works out how long an outage is tolerated.
resource "google_pubsub_subscription" "watcher" {
  project                    = var.project_id
  name                       = "${var.name}-retrain-watcher"
  topic                      = google_pubsub_topic.data_events.id
  ack_deadline_seconds       = var.watcher_ack_deadline_seconds
  message_retention_duration = "604800s"
  retain_acked_messages      = false
  labels                     = var.labels

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.watcher_max_delivery_attempts
  }

  expiration_policy {
    ttl = "" # never expire, even when the watcher is down for a long time
  }

  depends_on = [
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}

# Messages in the dead-letter topic are kept for inspection.
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = "${var.name}-data-events-dead-letter"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  labels                     = var.labels

  expiration_policy {
    ttl = ""
  }
}

# Dead lettering: the Pub/Sub service agent forwards undeliverable messages
# (publisher on the dead-letter topic) and acks them on the source
# subscription (subscriber on it).
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${local.pubsub_agent}"

  depends_on = [terraform_data.service_agent]
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.watcher.id
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${local.pubsub_agent}"

  depends_on = [terraform_data.service_agent]
}

# The watcher publishes messages it rejects (malformed, hostile) to the
# dead-letter topic itself, with the reason as attributes, then acks them.
resource "google_pubsub_topic_iam_member" "watcher_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.id
  role    = "roles/pubsub.publisher"
  member  = google_service_account.watcher.member
}

# Retrain requests: anyone allowed to publish here (project owners, CI) asks
# the watcher for a run without new data.
resource "google_pubsub_topic" "retrain_requests" {
  project                    = var.project_id
  name                       = "${var.name}-retrain-requests"
  kms_key_name               = var.kms_key_name
  message_retention_duration = "86400s"
  labels                     = var.labels

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

resource "google_pubsub_subscription" "retrain_requests" {
  project                    = var.project_id
  name                       = "${var.name}-retrain-requests-watcher"
  topic                      = google_pubsub_topic.retrain_requests.id
  ack_deadline_seconds       = var.watcher_ack_deadline_seconds
  message_retention_duration = "604800s"
  labels                     = var.labels

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.watcher_max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.dead_letter_publisher]
}

resource "google_pubsub_subscription_iam_member" "requests_dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.retrain_requests.id
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${local.pubsub_agent}"

  depends_on = [terraform_data.service_agent]
}
