"""Phase answers: answers and judgments, and the dataset: respond, judge, dataset."""
