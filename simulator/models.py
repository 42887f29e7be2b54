"""`GET /models` entries shaped like the catalog bundled in the Codex CLI 0.169.0 (it rejects thinner ones)."""

_EFFORTS = [
    ("low", "Fast responses with lighter reasoning"),
    ("medium", "Balances speed and reasoning depth for everyday tasks"),
    ("high", "Greater reasoning depth for complex problems"),
    ("xhigh", "Extra high reasoning depth for complex problems"),
]


def model_info(slug: str, priority: int) -> dict:
    return {
        "slug": slug,
        "display_name": slug.replace("gpt", "GPT", 1),
        "description": f"Simulated {slug}.",
        "default_reasoning_level": "medium",
        "supported_reasoning_levels": [{"effort": e, "description": d} for e, d in _EFFORTS],
        "shell_type": "shell_command",
        "visibility": "list",
        "supported_in_api": True,
        "priority": priority,
        "minimal_client_version": "0.1.0",
        "upgrade": None,
        "availability_nux": None,
        "base_instructions": "You are Codex, a coding agent (simulated).",
        "model_messages": None,
        "supports_reasoning_summaries": True,
        "supports_reasoning_summary_parameter": True,
        "default_reasoning_summary": "none",
        "support_verbosity": True,
        "default_verbosity": "low",
        "apply_patch_tool_type": "freeform",
        "web_search_tool_type": "text_and_image",
        "truncation_policy": {"mode": "tokens", "limit": 10000},
        "supports_parallel_tool_calls": True,
        "context_window": 272000,
        "max_context_window": 272000,
        "auto_compact_token_limit": None,
        "effective_context_window_percent": 95,
        "experimental_supported_tools": [],
        "input_modalities": ["text", "image"],
        "prefer_websockets": True,
        "supports_image_detail_original": True,
        "tool_mode": None,
        "multi_agent_version": None,
        "multi_agent_reasoning_effort": None,
        "use_responses_lite": False,
        "supports_reasoning_effort_updates": False,
        "include_skills_usage_instructions": False,
        "include_apps_usage_instructions": False,
        "include_plugin_usage_instructions": False,
        "guardian": None,
        "node_repl_auto_review_required": False,
        "node_repl_disabled": False,
        "requires_sandboxed_review": False,
        "auto_review_model_override": None,
        "model_specialty": None,
        "comp_hash": "sim",
        "supports_search_tool": False,
        "supports_experimental_context": False,
        "default_service_tier": None,
        "service_tiers": [],
        "additional_speed_tiers": [],
    }


def models_response(slugs: list[str]) -> dict:
    return {"models": [model_info(slug, priority) for priority, slug in enumerate(slugs, start=1)]}
