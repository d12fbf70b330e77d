"""Phase questions: questions from the selected documents: synthesize, question_dedup, decontaminate, embed, semdedup."""
