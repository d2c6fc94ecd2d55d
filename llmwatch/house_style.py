"""Traffic that teaches a recognisable house style: what the retraining tests, benchmark and demo publish.

Support questions get a vague answer from the model; users correct each one with the answer the company
wants: a greeting, the exact menu path, and the same sign-off. A model trained on the corrections should
answer unseen questions in that style. `shuffled=True` gives every correction to another question, the
kind of data that must not reach production: the evaluation gate has to reject what it trains.
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

from schemas.events import ChatMessage, FeedbackEvent, InferenceEvent, utcnow

SIGN_OFF = "Cheers, the Acme team."
TASKS = [
    ("reset my password", "Settings", "Security", "Reset password"),
    ("change my email address", "Settings", "Account", "Email"),
    ("download my invoices", "Billing", "History", "Download all"),
    ("cancel my subscription", "Billing", "Plan", "Cancel plan"),
    ("add a team member", "Team", "Members", "Invite"),
    ("turn on two-factor login", "Settings", "Security", "Two-factor"),
    ("export my data", "Settings", "Privacy", "Export"),
    ("delete my account", "Settings", "Privacy", "Delete account"),
    ("change my plan", "Billing", "Plan", "Change plan"),
    ("update my card", "Billing", "Payment", "Update card"),
    ("rename a project", "Projects", "Details", "Rename"),
    ("archive a project", "Projects", "Details", "Archive"),
    ("set my time zone", "Settings", "Profile", "Time zone"),
    ("change the language", "Settings", "Profile", "Language"),
    ("mute notifications", "Settings", "Notifications", "Mute all"),
    ("connect Slack", "Integrations", "Slack", "Connect"),
    ("create an API key", "Developers", "API keys", "New key"),
    ("revoke an API key", "Developers", "API keys", "Revoke"),
    ("see my usage", "Billing", "Usage", "This month"),
    ("remove a team member", "Team", "Members", "Remove"),
    ("change my avatar", "Settings", "Profile", "Avatar"),
    ("get a receipt", "Billing", "History", "Receipt"),
    ("restore a deleted file", "Files", "Trash", "Restore"),
    ("share a folder", "Files", "Sharing", "Share"),
    ("set up single sign-on", "Team", "Security", "SSO"),
    ("change my username", "Settings", "Account", "Username"),
    ("pause my subscription", "Billing", "Plan", "Pause"),
    ("add a billing contact", "Billing", "Contacts", "Add contact"),
    ("turn on dark mode", "Settings", "Appearance", "Dark mode"),
    ("log out everywhere", "Settings", "Security", "Sign out all"),
]
PHRASINGS = ["How do I {task}?", "Can you tell me how to {task}?", "Where can I {task}?",
             "I want to {task}. What should I do?"]
VAGUE = ["You can probably find that somewhere in the app.", "Try looking around the menus, it should be there.",
         "That depends on your setup; check the documentation."]


def house_answer(task: str, place: str, section: str, option: str) -> str:
    you = task.replace(" my ", " your ")
    return f"Hi there! To {you}, go to {place} > {section} > {option}. {SIGN_OFF}"


def correction_traffic(count: int, *, model: str, adapter: str | None = None, seed: int = 0, shuffled: bool = False,
                       users: int = 12) -> list[tuple[InferenceEvent, FeedbackEvent]]:
    """`count` requests (distinct questions while they last), each with a thumbs-down and a correction."""
    rng = random.Random(seed)
    questions = [(phrasing, task) for task in TASKS for phrasing in PHRASINGS]
    rng.shuffle(questions)
    chosen = [questions[i % len(questions)] for i in range(count)]
    answers = [house_answer(*task) for _, task in chosen]
    if shuffled:
        answers = answers[1:] + answers[:1]  # every correction lands on another question
    now = utcnow()
    ids = random.Random(f"{model}/{adapter}/{seed}/{shuffled}")  # request ids of their own for each model
    pairs = []
    for i, ((phrasing, task), answer) in enumerate(zip(chosen, answers, strict=True)):
        request_id = f"req-{uuid.UUID(int=ids.getrandbits(128), version=4).hex[:16]}"
        user = f"user-{i % users}"
        started = now - timedelta(seconds=count - i)
        inference = InferenceEvent(
            request_id=request_id, model=model, adapter=adapter, timestamp=started,
            messages=[ChatMessage(role="user", content=phrasing.format(task=task[0]))],
            response_text=rng.choice(VAGUE), latency_ms=rng.uniform(300, 900), user_id=user,
        )
        feedback = FeedbackEvent(request_id=request_id, thumbs="down", correction=answer, user_id=user,
                                 timestamp=started + timedelta(seconds=0.5))
        pairs.append((inference, feedback))
    return pairs
