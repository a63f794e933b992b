# The Helm values make cluster passes to charts/retrain-watcher, planned
# against the mocked provider with the ids known only after apply fixed.
# tests/terraform/test_chart_values.py runs this file with -verbose, takes
# output watcher_helm_values and renders the chart with it (helm template).

mock_provider "google" {
  source = "./tests/mocks"
}

variables {
  project_id = "jobgen-test-project"
  master_authorized_networks = [
    { cidr_block = "203.0.113.0/24", display_name = "office" },
  ]
  watcher_image_tag = "0123456789ab"
}

override_resource {
  override_during = plan
  target          = google_pubsub_subscription.watcher
  values = {
    id = "projects/jobgen-test-project/subscriptions/jobgen-retrain-watcher"
  }
}

override_resource {
  override_during = plan
  target          = google_pubsub_subscription.retrain_requests
  values = {
    id = "projects/jobgen-test-project/subscriptions/jobgen-retrain-requests-watcher"
  }
}

override_resource {
  override_during = plan
  target          = google_pubsub_topic.dead_letter
  values = {
    id = "projects/jobgen-test-project/topics/jobgen-data-events-dead-letter"
  }
}

override_resource {
  override_during = plan
  target          = google_service_account.watcher
  values = {
    email  = "jobgen-watcher@jobgen-test-project.iam.gserviceaccount.com"
    member = "serviceAccount:jobgen-watcher@jobgen-test-project.iam.gserviceaccount.com"
    name   = "projects/jobgen-test-project/serviceAccounts/jobgen-watcher@jobgen-test-project.iam.gserviceaccount.com"
  }
}

run "helm_values" {
  command = plan

  assert {
    condition     = yamldecode(output.watcher_helm_values).gcp.stateBucket == "jobgen-test-project-jobgen-watcher-state"
    error_message = "the values carry the state bucket"
  }
}
